// Command etcd is etcd's own server main, built from go.etcd.io/etcd/server so
// that tests need no prebuilt download.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
