// Command etcd is upstream's etcd server entrypoint. etcd's own root module
// carries replace directives, which `go install` refuses, so this module
// requires the server module directly and calls the same Main.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
