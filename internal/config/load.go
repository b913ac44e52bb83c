package config

import (
	"encoding"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/parser"
)

// EnvPrefix starts the name of every environment override.
const EnvPrefix = "IMAGO_"

// Load returns the configuration: Default, then the YAML file at path (an empty path means no
// file), then the IMAGO_* environment overrides, with token_env references and
// cluster.forward_secret_env resolved. A key the file does not know is an error that names it.
// Load does not call Validate.
func Load(path string) (Config, error) {
	return load(path, os.LookupEnv)
}

func load(path string, lookup func(string) (string, bool)) (Config, error) {
	cfg := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("read configuration: %w", err)
		}
		if err := Parse(data, &cfg); err != nil {
			return Config{}, fmt.Errorf("configuration %s: %w", path, err)
		}
	}
	if err := applyEnv(&cfg, lookup); err != nil {
		return Config{}, err
	}
	if err := cfg.resolveTokens(lookup); err != nil {
		return Config{}, err
	}
	if err := cfg.Cluster.resolveForwardSecret(lookup); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Parse decodes YAML into cfg, keeping the values of keys the document does not mention.
// Unknown keys are an error naming the key and its line. Errors never quote the document's
// text (the YAML library's source excerpt is off): the lines around a mistake may hold DSNs
// with passwords, and start-up errors go where the logs go.
func Parse(data []byte, cfg *Config) error {
	// An empty document (or one with comments only) would zero cfg: keep the defaults instead.
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return fmt.Errorf("%s", yaml.FormatError(err, false, false))
	}
	empty := true
	for _, d := range f.Docs {
		if d != nil && d.Body != nil {
			empty = false
		}
	}
	if empty {
		return nil
	}
	if err := yaml.UnmarshalWithOptions(data, cfg, yaml.DisallowUnknownField()); err != nil {
		return fmt.Errorf("%s", yaml.FormatError(err, false, false))
	}
	return nil
}

// resolveTokens fills Token from TokenEnv.
func (c *Config) resolveTokens(lookup func(string) (string, bool)) error {
	for i := range c.Auth.Tokens {
		t := &c.Auth.Tokens[i]
		if t.TokenEnv == "" {
			return fmt.Errorf("auth.tokens[%d] (%s): token_env is required: name the environment variable that holds the secret", i, t.Name)
		}
		v, ok := lookup(t.TokenEnv)
		if !ok || v == "" {
			return fmt.Errorf("auth.tokens[%d] (%s): token_env names %s, which is not set or empty; export it or remove the token", i, t.Name, t.TokenEnv)
		}
		t.Token = v
	}
	return nil
}

// EnvVars lists the IMAGO_* variables that override c's scalar keys, sorted, with the YAML key
// each one sets ("IMAGO_HTTP_ADDR" -> "http.addr").
func EnvVars(c Config) map[string]string {
	out := map[string]string{}
	walkScalars(reflect.ValueOf(&c).Elem(), "", "", func(env, key string, _ reflect.Value) error {
		out[env] = key
		return nil
	})
	return out
}

// SortedEnvVars returns the names of EnvVars(c) in order.
func SortedEnvVars(c Config) []string {
	m := EnvVars(c)
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// applyEnv sets every scalar key whose IMAGO_* variable is present.
func applyEnv(c *Config, lookup func(string) (string, bool)) error {
	return walkScalars(reflect.ValueOf(c).Elem(), "", "", func(env, key string, v reflect.Value) error {
		s, ok := lookup(env)
		if !ok {
			return nil
		}
		if err := setScalar(v, s); err != nil {
			return fmt.Errorf("environment %s (%s): %w", env, key, err)
		}
		return nil
	})
}

// envSegment turns one key segment into its variable form: upper case, non-alphanumerics as "_".
func envSegment(s string) string {
	b := []byte(strings.ToUpper(s))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

var (
	durationType  = reflect.TypeFor[time.Duration]()
	textUnmarshal = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// walkScalars calls fn for every settable scalar under v (a struct, a map of structs, or a
// scalar), with its variable name and dotted key. Map entries are copied, visited and stored
// back, so fn may modify them. Lists of objects are skipped.
func walkScalars(v reflect.Value, env, key string, fn func(env, key string, v reflect.Value) error) error {
	if isScalar(v.Type()) {
		return fn(EnvPrefix+env, key, v)
	}
	switch v.Kind() {
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" || !f.IsExported() {
				continue
			}
			if err := walkScalars(v.Field(i), join(env, "_", envSegment(name)), join(key, ".", name), fn); err != nil {
				return err
			}
		}
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return nil
		}
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		for _, k := range keys {
			elem := reflect.New(v.Type().Elem()).Elem()
			elem.Set(v.MapIndex(k))
			if err := walkScalars(elem, join(env, "_", envSegment(k.String())), join(key, ".", k.String()), fn); err != nil {
				return err
			}
			v.SetMapIndex(k, elem)
		}
	}
	return nil
}

func join(a, sep, b string) string {
	if a == "" {
		return b
	}
	return a + sep + b
}

func isScalar(t reflect.Type) bool {
	if t == durationType || reflect.PointerTo(t).Implements(textUnmarshal) {
		return true
	}
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint64:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.String
	}
	return false
}

// setScalar parses s into v according to v's type.
func setScalar(v reflect.Value, s string) error {
	if v.Type() == durationType {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("want a duration such as 10s or 168h: %w", err)
		}
		v.SetInt(int64(d))
		return nil
	}
	if u, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return u.UnmarshalText([]byte(s))
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("want true or false, got %q", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("want an integer, got %q", s)
		}
		v.SetInt(n)
	case reflect.Uint64:
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return fmt.Errorf("want a non-negative integer, got %q", s)
		}
		v.SetUint(n)
	case reflect.Slice:
		var list []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				list = append(list, p)
			}
		}
		v.Set(reflect.ValueOf(list).Convert(v.Type()))
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}
