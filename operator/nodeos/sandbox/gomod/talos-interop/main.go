// Command talos-interop checks nodeos's Talos machine API against the official Talos client.
//
// It (a) diffs the descriptors nodeos ships (a FileDescriptorSet written by the test) against
// the ones compiled into github.com/siderolabs/talos/pkg/machinery, and (b) drives a Talos API
// server (the nodeos simulator) with the machinery client, routed with client.WithNode and
// client.WithNodes, asserting the answers a real node gives. Each check prints one line
// ("ok <name>" or "FAIL <name>: <why>"); the exit code is 1 when any check failed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/siderolabs/talos/pkg/machinery/client"
	clientconfig "github.com/siderolabs/talos/pkg/machinery/client/config"
)

var failed bool

func check(name string, err error) {
	if err != nil {
		failed = true
		fmt.Printf("FAIL %s: %v\n", name, err)
		return
	}
	fmt.Printf("ok %s\n", name)
}

func main() {
	descriptors := flag.String("descriptors", "", "FileDescriptorSet of nodeos's .proto files")
	talosconfig := flag.String("talosconfig", "", "talosconfig of the server to drive")
	controlPlane := flag.String("control-plane", "cp-1", "a control-plane node")
	worker := flag.String("worker", "worker-1", "a worker for the Lifecycle path and Reboot")
	legacyWorker := flag.String("legacy-worker", "worker-2", "a worker for the legacy Upgrade")
	image := flag.String("image", "ghcr.io/siderolabs/installer:v1.13.9", "installer image")
	flag.Parse()

	if *descriptors != "" {
		diffDescriptors(*descriptors)
	}
	if *talosconfig != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cfg, err := clientconfig.Open(*talosconfig)
		if err != nil {
			check("open talosconfig", err)
			os.Exit(1)
		}
		c, err := client.New(ctx, client.WithConfig(cfg))
		if err != nil {
			check("client", err)
			os.Exit(1)
		}
		defer c.Close() //nolint:errcheck
		drive(ctx, c, *controlPlane, *worker, *legacyWorker, *image)
	}
	if failed {
		os.Exit(1)
	}
}
