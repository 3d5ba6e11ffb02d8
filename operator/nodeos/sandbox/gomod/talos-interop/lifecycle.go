//go:build !talos112

package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/siderolabs/talos/pkg/machinery/api/common"
	"github.com/siderolabs/talos/pkg/machinery/api/machine"
	"github.com/siderolabs/talos/pkg/machinery/client"
	"google.golang.org/grpc/codes"
)

// lifecycleUpgrade is the Talos >= 1.13 path: ImageService.Pull into the CRI containerd,
// LifecycleService.Upgrade (install only; the exit code arrives as data), then Reboot.
func lifecycleUpgrade(ctx context.Context, c *client.Client, worker, image, _ string) {
	one := client.WithNode(ctx, worker)
	containerd := &common.ContainerdInstance{Driver: common.ContainerDriver_CRI, Namespace: common.ContainerdNamespace_NS_CRI}

	upgrade, err := c.LifecycleClient.Upgrade(one, &machine.LifecycleServiceUpgradeRequest{
		Containerd: containerd, Source: &machine.InstallArtifactsSource{ImageName: image},
	})
	if err == nil {
		_, err = upgrade.Recv()
	}
	check("LifecycleService.Upgrade before a Pull: Internal", wantCode(err, codes.Internal))

	bootBefore, _ := read(one, c, bootIDPath)
	pull, err := c.ImageClient.Pull(one, &machine.ImageServicePullRequest{Containerd: containerd, ImageRef: image})
	for err == nil {
		_, err = pull.Recv()
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	check("ImageService.Pull (CRI)", err)

	upgrade, err = c.LifecycleClient.Upgrade(one, &machine.LifecycleServiceUpgradeRequest{
		Containerd: containerd, Source: &machine.InstallArtifactsSource{ImageName: image},
	})
	exitCode := int32(-1)
	for err == nil {
		var reply *machine.LifecycleServiceUpgradeResponse
		reply, err = upgrade.Recv()
		if err == nil {
			if code, ok := reply.GetProgress().GetResponse().(*machine.LifecycleServiceInstallProgress_ExitCode); ok {
				exitCode = code.ExitCode
			}
		}
	}
	if errors.Is(err, io.EOF) {
		err = nil
	}
	if err == nil && exitCode != 0 {
		err = fmt.Errorf("exit code %d", exitCode)
	}
	check("LifecycleService.Upgrade (CRI) installs, exit code 0", err)

	if err == nil {
		err = c.Reboot(one)
	}
	if err == nil {
		err = awaitNewBoot(one, c, bootBefore, image)
	}
	check("Reboot after the install: node back on the new version", err)
}
