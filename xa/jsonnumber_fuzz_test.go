package xa

import (
	"encoding/json"
	"math/big"
	"strings"
	"testing"
)

// parseJSONNumber reads a JSON number exactly. Checked against encoding/json for what is a
// number, and against math/big for its value and its int64 (where the exponent is small
// enough for math/big to hold the value cheaply).
func FuzzParseJSONNumber(f *testing.F) {
	for _, s := range []string{"0", "-0", "1", "-1.50", "1e2", "1.5E+1", "100.0", "0.99999999999999999",
		"1e-400", "9223372036854775807", "-9223372036854775808", "9223372036854775808", "01", "1.",
		".5", "+1", "1e", "-", "12345678901234567.89", "1e999999999", "0.000e5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseJSONNumber(s)
		isNumber := s != "" && (s[0] == '-' || s[0] >= '0' && s[0] <= '9') && strings.Trim(s, " \t\r\n") == s && json.Valid([]byte(s))
		if ok != isNumber {
			t.Fatalf("parseJSONNumber(%q) ok=%v, but encoding/json says number=%v", s, ok, isNumber)
		}
		if !ok || len(s) > 200 || strings.ContainsAny(s, "eE") && len(s[strings.IndexAny(s, "eE")+1:]) > 4 {
			return
		}
		want, good := new(big.Rat).SetString(s)
		if !good {
			t.Fatalf("math/big cannot read %q", s)
		}
		got := new(big.Rat)
		if d.digits != "" {
			n, _ := new(big.Int).SetString(d.digits, 10)
			e := d.point - int64(len(d.digits))
			p := new(big.Int).Exp(big.NewInt(10), big.NewInt(max(e, -e)), nil)
			if e >= 0 {
				got.SetInt(n.Mul(n, p))
			} else {
				got.SetFrac(n, p)
			}
			if d.neg {
				got.Neg(got)
			}
		}
		if got.Cmp(want) != 0 {
			t.Fatalf("parseJSONNumber(%q) = %+v = %s, want %s", s, d, got.RatString(), want.RatString())
		}
		n, isInt := d.int64()
		fits := want.IsInt() && want.Num().IsInt64()
		if isInt != fits || fits && n != want.Num().Int64() {
			t.Fatalf("int64 of %q = %d, %v; want %s, %v", s, n, isInt, want.RatString(), fits)
		}
	})
}
