//go:build talos112

package main

import (
	"context"

	"github.com/siderolabs/talos/pkg/machinery/client"
)

// lifecycleUpgrade: machinery v1.12 has no ImageService or LifecycleService client.
func lifecycleUpgrade(context.Context, *client.Client, string, string, string) {}
