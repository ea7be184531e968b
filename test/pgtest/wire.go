package pgtest

import "encoding/binary"

// BinaryArray is a one-dimensional array in PostgreSQL's binary format,
// with elements of type elem (an OID) and no NULLs: what a driver sends
// for an array parameter in binary format.
func BinaryArray(elem uint32, values ...[]byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, 1) // dimensions
	b = binary.BigEndian.AppendUint32(b, 0)    // no NULLs
	b = binary.BigEndian.AppendUint32(b, elem)
	b = binary.BigEndian.AppendUint32(b, uint32(len(values)))
	b = binary.BigEndian.AppendUint32(b, 1) // lower bound
	for _, v := range values {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}
