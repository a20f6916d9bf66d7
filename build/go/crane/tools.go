//go:build tools

// crane, built from this module: `crane registry serve` is the local host's
// image registry, and `crane append`/`crane mutate` layer vnest's images.
package main

import (
	_ "github.com/google/go-containerregistry/cmd/crane"
)
