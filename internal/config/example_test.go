package config

import "testing"

// The shipped example must stay valid.
func TestExampleConfig(t *testing.T) {
	if _, err := Load("../../etc/postie.toml", true); err != nil {
		t.Fatal(err)
	}
}
