//go:build tools

// Pins the kine module; the binary is built straight from its main package.
package tools

import _ "github.com/k3s-io/kine"
