package config

import (
	"fmt"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// HostList is a list of host:port strings, written as a YAML list or one comma-separated string.
//
// It decodes its YAML node itself because the YAML library reads an unquoted 127.0.0.1:2181
// inside a flow list inside a flow map (`zookeeper: {servers: [127.0.0.1:2181]}`, the form
// docs/operations.md shows) as a one-entry map; HostList turns such an entry back into "host:port".
type HostList []string

// UnmarshalYAML implements yaml.NodeUnmarshaler.
func (h *HostList) UnmarshalYAML(node ast.Node) error {
	var out HostList
	switch n := node.(type) {
	case *ast.NullNode:
	case *ast.SequenceNode:
		for _, v := range n.Values {
			s, err := hostEntry(v)
			if err != nil {
				return err
			}
			out = append(out, s)
		}
	default:
		s, err := hostEntry(node)
		if err != nil {
			return err
		}
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	*h = out
	return nil
}

func hostEntry(node ast.Node) (string, error) {
	switch n := node.(type) {
	case *ast.MappingNode:
		if len(n.Values) == 1 {
			return hostEntry(n.Values[0])
		}
	case *ast.MappingValueNode:
		return scalarText(n.Key) + ":" + scalarText(n.Value), nil
	case ast.ScalarNode:
		return scalarText(n), nil
	}
	return "", fmt.Errorf("line %d: want host:port, got %s", node.GetToken().Position.Line, node.String())
}
