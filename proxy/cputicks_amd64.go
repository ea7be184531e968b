package proxy

// cputicks reads the processor's time-stamp counter.
func cputicks() uint64

const haveCputicks = true
