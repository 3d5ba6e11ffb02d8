package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/siderolabs/talos/pkg/machinery/api/machine"
	"github.com/siderolabs/talos/pkg/machinery/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
)

const (
	configPath = "/system/state/config.yaml"
	bootIDPath = "/proc/sys/kernel/random/boot_id"
)

// drive calls the server the way talosctl and the machinery client do, node by node.
func drive(ctx context.Context, c *client.Client, controlPlane, worker, legacyWorker, image string) {
	one := client.WithNode(ctx, worker)
	many := client.WithNodes(ctx, worker)

	version, err := c.Version(one)
	if err == nil && version.GetMessages()[0].GetVersion().GetTag() == "" {
		err = errors.New("no version tag")
	}
	check("Version with WithNode", err)
	before := ""
	if err == nil {
		before = version.GetMessages()[0].GetVersion().GetTag()
	}

	hostname, err := c.MachineClient.Hostname(many, &emptypb.Empty{})
	if err == nil {
		got := hostname.GetMessages()[0]
		if got.GetHostname() != worker || got.GetMetadata().GetHostname() != worker {
			err = fmt.Errorf("nodes=%s answered by %q (metadata %q)", worker, got.GetHostname(), got.GetMetadata().GetHostname())
		}
	}
	check("Hostname with WithNodes: served by that node, metadata names it", err)

	hostname, err = c.MachineClient.Hostname(one, &emptypb.Empty{})
	if err == nil && hostname.GetMessages()[0].GetHostname() != worker {
		err = fmt.Errorf("node=%s answered by %q", worker, hostname.GetMessages()[0].GetHostname())
	}
	check("Hostname with WithNode: served by that node", err)

	services, err := c.ServiceList(one)
	if err == nil && len(services.GetMessages()[0].GetServices()) == 0 {
		err = errors.New("no services")
	}
	check("ServiceList", err)

	members, err := c.EtcdMemberList(client.WithNode(ctx, controlPlane), &machine.EtcdMemberListRequest{})
	if err == nil && len(members.GetMessages()[0].GetMembers()) == 0 {
		err = errors.New("no members")
	}
	check("EtcdMemberList on a control plane", err)

	etcd, err := c.EtcdStatus(client.WithNode(ctx, controlPlane))
	if err == nil && etcd.GetMessages()[0].GetMemberStatus().GetMemberId() == 0 {
		err = errors.New("no member id")
	}
	check("EtcdStatus on a control plane", err)

	_, err = c.EtcdStatus(one)
	check("EtcdStatus on a worker answers Unimplemented", wantCode(err, codes.Unimplemented))

	config, err := read(one, c, configPath)
	check("Read the machine configuration", err)
	if err == nil {
		applyModes(one, c, config)
	}

	lifecycleUpgrade(ctx, c, worker, image, before)

	legacy := client.WithNode(ctx, legacyWorker)
	bootBefore, _ := read(legacy, c, bootIDPath)
	reply, err := c.UpgradeWithOptions(legacy, client.WithUpgradeImage(image))
	if err == nil && reply.GetMessages()[0].GetAck() == "" {
		err = errors.New("no ack")
	}
	if err == nil {
		err = awaitNewBoot(legacy, c, bootBefore, image)
	}
	check("legacy Upgrade: acked, node reboots on the new version", err)
}

func applyModes(ctx context.Context, c *client.Client, config []byte) {
	live := append(bytes.Clone(config), []byte("  sysctls:\n    net.core.somaxconn: \"65535\"\n")...)
	reboot := append(bytes.Clone(config), []byte("  env:\n    HTTP_PROXY: http://proxy:3128\n")...)
	apply := func(data []byte, mode machine.ApplyConfigurationRequest_Mode, dryRun bool) (machine.ApplyConfigurationRequest_Mode, error) {
		request := &machine.ApplyConfigurationRequest{Data: data, Mode: mode, DryRun: dryRun}
		if mode == machine.ApplyConfigurationRequest_TRY {
			request.TryModeTimeout = durationpb.New(time.Minute)
		}
		reply, err := c.ApplyConfiguration(ctx, request)
		if err != nil {
			return 0, err
		}
		return reply.GetMessages()[0].GetMode(), nil
	}
	expect := func(name string, data []byte, mode, want machine.ApplyConfigurationRequest_Mode) {
		got, err := apply(data, mode, true)
		if err == nil && got != want {
			err = fmt.Errorf("mode %s came back %s, want %s", mode, got, want)
		}
		check(name, err)
	}
	expect("ApplyConfiguration AUTO (dry run) resolves to NO_REBOOT", live, machine.ApplyConfigurationRequest_AUTO, machine.ApplyConfigurationRequest_NO_REBOOT)
	expect("ApplyConfiguration AUTO (dry run) resolves to REBOOT", reboot, machine.ApplyConfigurationRequest_AUTO, machine.ApplyConfigurationRequest_REBOOT)
	expect("ApplyConfiguration NO_REBOOT (dry run)", live, machine.ApplyConfigurationRequest_NO_REBOOT, machine.ApplyConfigurationRequest_NO_REBOOT)
	expect("ApplyConfiguration STAGED (dry run)", reboot, machine.ApplyConfigurationRequest_STAGED, machine.ApplyConfigurationRequest_STAGED)
	expect("ApplyConfiguration TRY (dry run)", live, machine.ApplyConfigurationRequest_TRY, machine.ApplyConfigurationRequest_TRY)
	_, err := apply(reboot, machine.ApplyConfigurationRequest_NO_REBOOT, false)
	problem := wantCode(err, codes.InvalidArgument)
	if problem == nil && !strings.Contains(status.Convert(err).Message(), "can't be applied in immediate mode") {
		problem = fmt.Errorf("message %q", status.Convert(err).Message())
	}
	check("ApplyConfiguration NO_REBOOT of a reboot-needing change: InvalidArgument", problem)
}

func wantCode(err error, code codes.Code) error {
	if err == nil {
		return fmt.Errorf("succeeded, want %s", code)
	}
	if got := status.Code(err); got != code {
		return fmt.Errorf("answered %s (%v), want %s", got, err, code)
	}
	return nil
}

func read(ctx context.Context, c *client.Client, path string) ([]byte, error) {
	stream, err := c.Read(ctx, path)
	if err != nil {
		return nil, err
	}
	defer stream.Close() //nolint:errcheck
	return io.ReadAll(stream)
}

// awaitNewBoot waits until the node answers with another boot ID on the image's version.
func awaitNewBoot(ctx context.Context, c *client.Client, before []byte, image string) error {
	want := image[strings.LastIndex(image, ":")+1:]
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		boot, err := read(ctx, c, bootIDPath)
		if err == nil && !bytes.Equal(boot, before) {
			version, err := c.Version(ctx)
			if err == nil && version.GetMessages()[0].GetVersion().GetTag() == want {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("no reboot onto %s within 60s", want)
}
