//go:build !amd64

package proxy

func cputicks() uint64 { return 0 }

const haveCputicks = false
