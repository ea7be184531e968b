//go:build !amd64 || purego

package keyring

// block runs SHA-256's compression function over the whole 64-byte blocks
// of p, from and into h.
func block(h *[8]uint32, p []byte) { blockGeneric(h, p) }
