package config

import (
	"strings"
	"testing"
)

// A configuration error names the key and its line, never the text around it: the file holds
// DSNs with passwords, and start-up errors go where the logs go.
func TestParseErrorShowsNoSource(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown key": "offsets:\n  store: postgres\n  dsn: \"postgres://app:SuperSecretPw@db/x\"\n  colour: blue\n",
		"bad syntax":  "offsets:\n  dsn: \"root:SuperSecretPw@tcp(db:3306)/x\"\n  store: [postgres\n",
	} {
		t.Run(name, func(t *testing.T) {
			var cfg Config
			err := Parse([]byte(doc), &cfg)
			if err == nil {
				t.Fatal("Parse accepted the document")
			}
			if strings.Contains(err.Error(), "SuperSecretPw") {
				t.Errorf("the error shows the password: %v", err)
			}
			if !strings.Contains(err.Error(), "[") {
				t.Errorf("the error names no position: %v", err)
			}
		})
	}
}
