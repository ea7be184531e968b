//go:build !purego

package keyring

import "golang.org/x/sys/cpu"

// useSHANI is the standard library's own condition for its SHA-NI block
// function; x/sys/cpu does not report the SHA extensions, so CPUID does.
var useSHANI = cpu.X86.HasAVX && cpu.X86.HasSSE41 && cpu.X86.HasSSSE3 && cpuidSHA()

//go:noescape
func blockSHANI(h *[8]uint32, p []byte)

func cpuidSHA() bool

// block runs SHA-256's compression function over the whole 64-byte blocks
// of p, from and into h.
func block(h *[8]uint32, p []byte) {
	if useSHANI {
		blockSHANI(h, p)
		return
	}
	blockGeneric(h, p)
}
