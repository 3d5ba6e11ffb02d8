package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	// registers Talos's descriptors (packages common and machine)
	_ "github.com/siderolabs/talos/pkg/machinery/api/common"
	_ "github.com/siderolabs/talos/pkg/machinery/api/machine"
)

// diffDescriptors compares every message, enum and service nodeos defines with Talos's:
// field numbers, types, labels, type names and oneofs; enum value numbers; method input and
// output types and streaming. Names Talos lacks are reported as "missing in machinery".
func diffDescriptors(path string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		check("read descriptors", err)
		return
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &set); err != nil {
		check("parse descriptors", err)
		return
	}
	for _, file := range set.GetFile() {
		if strings.HasPrefix(file.GetPackage(), "google.") {
			continue
		}
		for _, message := range file.GetMessageType() {
			diffMessage(file.GetPackage()+"."+message.GetName(), message)
		}
		for _, enum := range file.GetEnumType() {
			diffEnum(file.GetPackage()+"."+enum.GetName(), enum)
		}
		for _, service := range file.GetService() {
			diffService(file.GetPackage()+"."+service.GetName(), service)
		}
	}
}

func theirs(name string) (protoreflect.Descriptor, error) {
	found, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil, fmt.Errorf("missing in machinery")
	}
	return found, nil
}

func diffMessage(name string, ours *descriptorpb.DescriptorProto) {
	found, err := theirs(name)
	if err != nil {
		check("message "+name, err)
		return
	}
	md, ok := found.(protoreflect.MessageDescriptor)
	if !ok {
		check("message "+name, fmt.Errorf("is not a message in machinery"))
		return
	}
	their := protodesc.ToDescriptorProto(md)
	byNumber := map[int32]*descriptorpb.FieldDescriptorProto{}
	for _, field := range their.GetField() {
		byNumber[field.GetNumber()] = field
	}
	var problems []string
	for _, field := range ours.GetField() {
		other, ok := byNumber[field.GetNumber()]
		if !ok {
			problems = append(problems, fmt.Sprintf("field %d (%s) missing", field.GetNumber(), field.GetName()))
			continue
		}
		if field.GetType() != other.GetType() || field.GetLabel() != other.GetLabel() ||
			field.GetTypeName() != other.GetTypeName() {
			problems = append(problems, fmt.Sprintf("field %d (%s): ours %s %s %s, theirs %s %s %s",
				field.GetNumber(), field.GetName(), field.GetLabel(), field.GetType(), field.GetTypeName(),
				other.GetLabel(), other.GetType(), other.GetTypeName()))
		}
		if oneof(ours, field) != oneof(their, other) {
			problems = append(problems, fmt.Sprintf("field %d (%s): oneof %q, theirs %q",
				field.GetNumber(), field.GetName(), oneof(ours, field), oneof(their, other)))
		}
	}
	sort.Strings(problems)
	if len(problems) > 0 {
		check("message "+name, fmt.Errorf("%s", strings.Join(problems, "; ")))
	} else {
		check("message "+name, nil)
	}
	for _, nested := range ours.GetNestedType() {
		diffMessage(name+"."+nested.GetName(), nested)
	}
	for _, enum := range ours.GetEnumType() {
		diffEnum(name+"."+enum.GetName(), enum)
	}
}

func oneof(message *descriptorpb.DescriptorProto, field *descriptorpb.FieldDescriptorProto) string {
	if field.OneofIndex == nil || field.GetProto3Optional() {
		return ""
	}
	return message.GetOneofDecl()[field.GetOneofIndex()].GetName()
}

func diffEnum(name string, ours *descriptorpb.EnumDescriptorProto) {
	found, err := theirs(name)
	if err != nil {
		check("enum "+name, err)
		return
	}
	ed, ok := found.(protoreflect.EnumDescriptor)
	if !ok {
		check("enum "+name, fmt.Errorf("is not an enum in machinery"))
		return
	}
	var problems []string
	for _, value := range ours.GetValue() {
		other := ed.Values().ByName(protoreflect.Name(value.GetName()))
		if other == nil {
			problems = append(problems, value.GetName()+" missing")
		} else if int32(other.Number()) != value.GetNumber() {
			problems = append(problems, fmt.Sprintf("%s = %d, theirs %d", value.GetName(), value.GetNumber(), other.Number()))
		}
	}
	if len(problems) > 0 {
		check("enum "+name, fmt.Errorf("%s", strings.Join(problems, "; ")))
	} else {
		check("enum "+name, nil)
	}
}

func diffService(name string, ours *descriptorpb.ServiceDescriptorProto) {
	found, err := theirs(name)
	if err != nil {
		check("service "+name, err)
		return
	}
	sd, ok := found.(protoreflect.ServiceDescriptor)
	if !ok {
		check("service "+name, fmt.Errorf("is not a service in machinery"))
		return
	}
	for _, method := range ours.GetMethod() {
		path := "/" + name + "/" + method.GetName()
		other := sd.Methods().ByName(protoreflect.Name(method.GetName()))
		if other == nil {
			check("method "+path, fmt.Errorf("missing in machinery"))
			continue
		}
		var problems []string
		if strings.TrimPrefix(method.GetInputType(), ".") != string(other.Input().FullName()) {
			problems = append(problems, fmt.Sprintf("input %s, theirs %s", method.GetInputType(), other.Input().FullName()))
		}
		if strings.TrimPrefix(method.GetOutputType(), ".") != string(other.Output().FullName()) {
			problems = append(problems, fmt.Sprintf("output %s, theirs %s", method.GetOutputType(), other.Output().FullName()))
		}
		if method.GetClientStreaming() != other.IsStreamingClient() || method.GetServerStreaming() != other.IsStreamingServer() {
			problems = append(problems, fmt.Sprintf("streaming client=%v server=%v, theirs client=%v server=%v",
				method.GetClientStreaming(), method.GetServerStreaming(), other.IsStreamingClient(), other.IsStreamingServer()))
		}
		if len(problems) > 0 {
			check("method "+path, fmt.Errorf("%s", strings.Join(problems, "; ")))
		} else {
			check("method "+path, nil)
		}
	}
}
