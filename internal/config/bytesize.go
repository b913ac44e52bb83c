package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// ByteSize is a size in bytes written as a plain integer or with a unit: "1GiB", "512MiB",
// "64KiB", "10MB" (decimal units: kB/KB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB
// powers of 1024; "B" is bytes). Fractions are allowed ("1.5GiB"); spaces between number and
// unit are not significant.
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   float64
}{
	// Longest suffixes first so that "GiB" is not read as "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// ParseByteSize parses a size such as "1GiB" or "1048576".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("size %q: empty", s)
	}
	if n, err := strconv.ParseInt(t, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("size %q: negative", s)
		}
		return ByteSize(n), nil
	}
	for _, u := range byteUnits {
		if !strings.HasSuffix(t, u.suffix) {
			continue
		}
		num := strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, fmt.Errorf("size %q: want a non-negative number followed by B, KiB, MiB, GiB, TiB, kB, MB, GB or TB", s)
		}
		v := f * u.mult
		if v > math.MaxInt64 {
			return 0, fmt.Errorf("size %q: too large", s)
		}
		return ByteSize(v), nil
	}
	return 0, fmt.Errorf("size %q: want a number of bytes or a size such as 512MiB or 1GiB", s)
}

// UnmarshalText implements encoding.TextUnmarshaler (used for YAML and environment values).
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// UnmarshalYAML implements yaml.NodeUnmarshaler so that a bad size is reported with its line.
func (b *ByteSize) UnmarshalYAML(node ast.Node) error {
	v, err := ParseByteSize(scalarText(node))
	if err != nil {
		return fmt.Errorf("line %d: %w", node.GetToken().Position.Line, err)
	}
	*b = v
	return nil
}

// scalarText is the text of a scalar node without quotes.
func scalarText(node ast.Node) string {
	if tk := node.GetToken(); tk != nil {
		return tk.Value
	}
	return node.String()
}

// MarshalText implements encoding.TextMarshaler: the exact binary unit when there is one.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// String formats the size with the largest binary unit that divides it ("1GiB", "1536KiB", "1000").
func (b ByteSize) String() string {
	n := int64(b)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
