// Command imago is Imago's one binary: the server (serve), the operator tools (topics, produce,
// consume) and the load generator (bench). Run `imago --help` for the list.
//
// Exit codes: 0 success, 1 failure (a request failed, the server stopped with an error),
// 2 usage (bad flags or arguments, or a configuration that does not validate).
package main

import (
	"context"
	"os"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
