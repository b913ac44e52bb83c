package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/imagomq/imago/internal/config"
	"github.com/spf13/cobra"
)

type benchDiskFlags struct {
	benchCommon
	dir        string
	blockBytes config.ByteSize
	fileBytes  config.ByteSize
}

func newBenchDiskCmd(a *app) *cobra.Command {
	f := benchDiskFlags{blockBytes: 1 << 20, fileBytes: 2 << 30}
	cmd := &cobra.Command{
		Use:   "disk",
		Short: "Measure sequential writes with an fsync after each MiB (the durable-produce ceiling)",
		Long: `Append --block-bytes blocks to a temporary file in --dir, calling fsync after each, for
--duration, and report MB/s and the latency of write+fsync. Run it on the data directory: it
is the rate a log with one fsync per MiB can reach on that disk, which batched durable
produce is compared with. The file is replaced every --file-bytes and removed at the end.`,
		Example: `  imago bench disk --dir ./data
  imago bench disk --dir /var/lib/imago --duration 5s --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			if f.blockBytes < 1 || f.fileBytes < f.blockBytes {
				return usagef("--block-bytes must be positive and at most --file-bytes")
			}
			return runBenchDisk(cmd.Context(), a, f)
		},
	}
	f.register(cmd, 10*time.Second, "how long to write")
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", "./data", "directory to measure (the data directory)")
	fl.Var(byteSizeFlag{&f.blockBytes}, "block-bytes", "bytes per write, each followed by fsync")
	fl.Var(byteSizeFlag{&f.fileBytes}, "file-bytes", "start a new temporary file after this many bytes")
	return cmd
}

func runBenchDisk(ctx context.Context, a *app, f benchDiskFlags) error {
	if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return fmt.Errorf("bench disk: %w", err)
	}
	block := make([]byte, f.blockBytes)
	for i := range block {
		block[i] = byte(i*7 + 1)
	}
	var m meter
	h := new(histogram)
	stopProgress := make(chan struct{})
	waitProgress := progress(a.stderr, f.progress, "disk", &m, stopProgress)
	defer func() {
		select {
		case <-stopProgress:
		default:
			close(stopProgress)
		}
		waitProgress()
	}()

	var file *os.File
	var written int64
	closeFile := func() {
		if file != nil {
			file.Close()
			os.Remove(file.Name())
			file = nil
		}
	}
	defer closeFile()
	deadline := time.Now().Add(f.duration)
	start := time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if file == nil || written+int64(len(block)) > int64(f.fileBytes) {
			closeFile()
			var err error
			if file, err = os.CreateTemp(f.dir, ".imago-bench-disk-*"); err != nil {
				return fmt.Errorf("bench disk: %w", err)
			}
			written = 0
		}
		t0 := time.Now()
		if _, err := file.Write(block); err != nil {
			return fmt.Errorf("bench disk: write: %w", err)
		}
		if err := file.Sync(); err != nil {
			return fmt.Errorf("bench disk: fsync: %w", err)
		}
		h.record(time.Since(t0))
		written += int64(len(block))
		m.requests.Add(1)
		m.bytes.Add(int64(len(block)))
	}
	elapsed := time.Since(start)
	close(stopProgress)
	waitProgress()
	waitProgress = func() {}
	r := newResult("disk", &m, h, elapsed)
	r.Note = fmt.Sprintf("%s per write+fsync in %s", f.blockBytes, f.dir)
	return r.print(a.stdout, f.json, "written and fsync'd")
}
