//go:build !linux

package perfdata

import "golang.org/x/sys/unix"

const mapFlags = unix.MAP_PRIVATE
