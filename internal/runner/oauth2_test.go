package runner_test

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/postie-mail/postie/internal/config"
	"github.com/postie-mail/postie/internal/runner"
	"github.com/postie-mail/postie/internal/testsink"
)

// A fake token endpoint hands out access tokens for a refresh token; the
// smarthost accepts only the current one. A revoked cached token is
// refreshed once, on the 535, and the message goes out.
func TestOAuth2Refresh(t *testing.T) {
	var calls atomic.Int32
	var current atomic.Value
	current.Store("tok-1")
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		if r.Form.Get("grant_type") != "refresh_token" || r.Form.Get("refresh_token") != "refresh-secret" {
			w.WriteHeader(400)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant"})
			return
		}
		if id, secret, ok := r.BasicAuth(); !(ok && id == "client-1" && secret == "client-secret") &&
			!(r.Form.Get("client_id") == "client-1" && r.Form.Get("client_secret") == "client-secret") {
			w.WriteHeader(401)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client"})
			return
		}
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": current.Load(), "token_type": "Bearer", "expires_in": 3600})
	}))
	defer ts.Close()

	h := newHarness(t, testsink.Options{Tokens: map[string]string{"user@example.com": "tok-1"}, RequireAuth: true, Users: map[string]string{}}, "")
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o644)
	os.WriteFile(filepath.Join(dir, "refresh"), []byte("refresh-secret\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("client-secret\n"), 0o600)
	h.cfg.Smarthost.Username = "user@example.com"
	h.cfg.Smarthost.PasswordFile = ""
	h.cfg.Smarthost.OAuth2 = &config.OAuth2{
		TokenURL: ts.URL + "/token", ClientID: "client-1",
		ClientSecretFile: filepath.Join(dir, "secret"), RefreshTokenFile: filepath.Join(dir, "refresh"), CAFile: caFile,
	}
	h.enqueue("alice@example.com", []string{"bob@example.org"}, "one\n")
	if sum := h.run(runner.Options{}); sum.Sent != 1 {
		t.Fatalf("first: %+v\n%s", sum, h.log.String())
	}
	caches, _ := filepath.Glob(filepath.Join(h.cfg.SpoolDir, "oauth2-token-*.json"))
	if len(caches) != 1 {
		t.Fatalf("token caches: %v", caches)
	}
	if st, err := os.Stat(caches[0]); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token cache: %v %v", err, st)
	}
	// The cached token serves the next run without the endpoint.
	h.enqueue("alice@example.com", []string{"bob@example.org"}, "two\n")
	if sum := h.run(runner.Options{}); sum.Sent != 1 || calls.Load() != 1 {
		t.Fatalf("second: %+v, endpoint calls %d", sum, calls.Load())
	}
	// The provider revokes tok-1: the cached token gets a 535, one
	// refresh gets tok-2.
	current.Store("tok-2")
	h.sink.SetToken("user@example.com", "tok-2")
	h.enqueue("alice@example.com", []string{"bob@example.org"}, "three\n")
	if sum := h.run(runner.Options{}); sum.Sent != 1 || calls.Load() != 2 {
		t.Fatalf("third: %+v, endpoint calls %d\n%s", sum, calls.Load(), h.dbg.String())
	}
	if h.sink.Count() != 3 {
		t.Errorf("delivered %d", h.sink.Count())
	}
}
