package test

// Cross-language checks of SPEC §4 against Python's cryptography package,
// the library the deployment runbook pgveil replaces used: tokens pgveil
// makes decrypt with cryptography.fernet.Fernet and MultiFernet, tokens
// Python makes decrypt through pgveil's keyring (also as a fallback key),
// and Python's hmac module reproduces pgveil's blind indexes.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/pgveil/pgveil/keyring"
)

const pythonPath = "/usr/bin/python3"

// pyInteropScript reads a JSON request on stdin and answers on stdout.
// Binary values travel as base64 (standard alphabet) so any bytes survive.
const pyInteropScript = `
import base64, hashlib, hmac, json, sys
from cryptography.fernet import Fernet, MultiFernet, InvalidToken

req = json.load(sys.stdin)
b = lambda s: base64.b64decode(s)
e = lambda x: base64.b64encode(x).decode()
new, old = req["key"].encode(), req["old_key"].encode()
f_new, f_old = Fernet(new), Fernet(old)
multi = MultiFernet([f_new, f_old])
out = {"decrypted": [], "multi_decrypted": [], "tokens_new": [], "tokens_old": [],
       "refused": [], "blind": [], "generated_key": Fernet.generate_key().decode()}
for t in req["go_tokens_new"]:
    out["decrypted"].append(e(f_new.decrypt(t.encode())))
for t in req["go_tokens_old"]:
    out["multi_decrypted"].append(e(multi.decrypt(t.encode())))
for t in req["go_tokens_old"]:
    try:
        f_new.decrypt(t.encode())
        out["refused"].append(False)
    except InvalidToken:
        out["refused"].append(True)
for p in req["plains"]:
    out["tokens_new"].append(f_new.encrypt(b(p)).decode())
    out["tokens_old"].append(f_old.encrypt(b(p)).decode())
hk = base64.urlsafe_b64decode(req["hash_key"])
for d, p in req["blind"]:
    ck = hmac.new(hk, b"pgveil blind index v1 " + d.encode(), hashlib.sha256).digest()
    out["blind"].append(hmac.new(ck, b(p), hashlib.sha256).hexdigest())
Fernet(req["go_generated_key"].encode())  # raises if Python refuses pgveil's key
json.dump(out, sys.stdout)
`

type pyRequest struct {
	Key            string      `json:"key"`
	OldKey         string      `json:"old_key"`
	GoTokensNew    []string    `json:"go_tokens_new"`
	GoTokensOld    []string    `json:"go_tokens_old"`
	Plains         []string    `json:"plains"`
	HashKey        string      `json:"hash_key"`
	Blind          [][2]string `json:"blind"`
	GoGeneratedKey string      `json:"go_generated_key"`
}

type pyResponse struct {
	Decrypted      []string `json:"decrypted"`
	MultiDecrypted []string `json:"multi_decrypted"`
	TokensNew      []string `json:"tokens_new"`
	TokensOld      []string `json:"tokens_old"`
	Refused        []bool   `json:"refused"`
	Blind          []string `json:"blind"`
	GeneratedKey   string   `json:"generated_key"`
}

// requirePythonCryptography fails (never skips) when the interpreter or
// the module is missing: the interop contract is not optional.
func requirePythonCryptography(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(pythonPath); err != nil {
		t.Fatalf("%s not found (%v): install the Debian packages python3 and python3-cryptography", pythonPath, err)
	}
	out, err := exec.Command(pythonPath, "-c", "import cryptography.fernet").CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import cryptography.fernet (%v: %s): install the Debian package python3-cryptography", pythonPath, err, bytes.TrimSpace(out))
	}
}

func runPython(t *testing.T, req pyRequest) pyResponse {
	t.Helper()
	in, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pythonPath, "-c", pyInteropScript)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python interop script: %v\n%s", err, stderr.String())
	}
	var resp pyResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatalf("python output: %v", err)
	}
	return resp
}

func TestKeyringPythonInterop(t *testing.T) {
	if testing.Short() {
		t.Skip("interop with Python runs without -short")
	}
	t.Parallel()
	requirePythonCryptography(t)

	newKeyText, _ := keyring.GenerateKey()
	oldKeyText, _ := keyring.GenerateKey()
	hashKeyText, _ := keyring.GenerateKey()
	goGenerated, _ := keyring.GenerateKey()
	newKey, err := keyring.ParseKey(newKeyText)
	if err != nil {
		t.Fatal(err)
	}
	oldKey, _ := keyring.ParseKey(oldKeyText)
	hashRaw, _ := base64.URLEncoding.DecodeString(hashKeyText)

	current := keyring.New(newKey, []*keyring.Key{oldKey}, 2, hashRaw, nil)
	previous := keyring.New(oldKey, nil, 1, hashRaw, nil)

	plains := [][]byte{
		{}, []byte("alice@example.com"), []byte("Zoë — 北京 — 🙂"), []byte("a\x00b"), {0xff, 0xfe, 0x00, 0x80},
		bytes.Repeat([]byte("0123456789abcdef"), 1), bytes.Repeat([]byte("x"), 4097),
	}
	req := pyRequest{Key: newKeyText, OldKey: oldKeyText, HashKey: hashKeyText, GoGeneratedKey: goGenerated}
	var wantBlind []string
	for _, p := range plains {
		tok, err := current.Seal(nil, p)
		if err != nil {
			t.Fatal(err)
		}
		req.GoTokensNew = append(req.GoTokensNew, string(tok))
		tok, _ = previous.Seal(nil, p)
		req.GoTokensOld = append(req.GoTokensOld, string(tok))
		req.Plains = append(req.Plains, base64.StdEncoding.EncodeToString(p))
		for _, d := range []string{"public.users.email", "email"} {
			req.Blind = append(req.Blind, [2]string{d, base64.StdEncoding.EncodeToString(p)})
			wantBlind = append(wantBlind, string(current.BlindIndex(nil, d, p)))
		}
	}

	resp := runPython(t, req)

	if len(resp.Decrypted) != len(plains) || len(resp.MultiDecrypted) != len(plains) ||
		len(resp.TokensNew) != len(plains) || len(resp.TokensOld) != len(plains) || len(resp.Blind) != len(wantBlind) {
		t.Fatalf("python answered %d/%d/%d/%d/%d values", len(resp.Decrypted), len(resp.MultiDecrypted), len(resp.TokensNew), len(resp.TokensOld), len(resp.Blind))
	}
	for i, p := range plains {
		// pgveil → Python (Fernet, and MultiFernet for the old key).
		if got, _ := base64.StdEncoding.DecodeString(resp.Decrypted[i]); !bytes.Equal(got, p) {
			t.Errorf("value %d: Python's Fernet decrypted pgveil's token to a different value", i)
		}
		if got, _ := base64.StdEncoding.DecodeString(resp.MultiDecrypted[i]); !bytes.Equal(got, p) {
			t.Errorf("value %d: Python's MultiFernet decrypted pgveil's old-key token to a different value", i)
		}
		if !resp.Refused[i] {
			t.Errorf("value %d: Python's Fernet opened a token of another key", i)
		}
		// Python → pgveil, under the primary and as fallback 1.
		tok := []byte(resp.TokensNew[i])
		if !strings.HasPrefix(resp.TokensNew[i], "gAAAAA") || !keyring.IsToken(tok) {
			t.Errorf("value %d: Python's token is not token-shaped for IsToken", i)
		}
		got, idx, err := current.Open(nil, tok)
		if err != nil || idx != 0 || !bytes.Equal(got, p) {
			t.Errorf("value %d: pgveil could not open Python's token: idx %d err %v", i, idx, err)
		}
		got, idx, err = current.Open(nil, []byte(resp.TokensOld[i]))
		if err != nil || idx != 1 || !bytes.Equal(got, p) {
			t.Errorf("value %d: pgveil could not open Python's old-key token via its fallback: idx %d err %v", i, idx, err)
		}
		// Without the old key it is undecryptable, not "not a token".
		if _, _, err := previous.Open(nil, tok); !errors.Is(err, keyring.ErrUndecryptable) {
			t.Errorf("value %d: foreign Python token: %v", i, err)
		}
	}
	for i, want := range wantBlind {
		if resp.Blind[i] != want {
			t.Errorf("blind index %d (%s): Python %s, pgveil %s", i, req.Blind[i][0], resp.Blind[i], want)
		}
	}
	if _, err := keyring.ParseKey(resp.GeneratedKey); err != nil {
		t.Errorf("pgveil refuses a key from Fernet.generate_key(): %v", err)
	}
}
