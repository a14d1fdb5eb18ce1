package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// version is the release this binary was built as; `make build` and `make image` set
// it with -ldflags "-X main.version=...". A plain `go build` leaves "dev", and the
// build information below still says which commit and dependencies it was built from.
var version = "dev"

// printVersion writes the version and the module's build information (Go version,
// main module, every dependency with its version and checksum, VCS revision when
// built from a checkout), which is what an operator needs to tell two binaries apart.
func printVersion(w io.Writer) {
	fmt.Fprintf(w, "modified-chat %s\n", version)
	if info, ok := debug.ReadBuildInfo(); ok {
		fmt.Fprint(w, info.String())
	} else {
		fmt.Fprintln(w, "no build information (built without module support)")
	}
}
