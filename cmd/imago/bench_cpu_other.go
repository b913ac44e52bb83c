//go:build !unix

package main

import "time"

// processCPU: without getrusage the benchmarks print no CPU figures.
func processCPU() (time.Duration, error) { return 0, errNoProcessCPU }
