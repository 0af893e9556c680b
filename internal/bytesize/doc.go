// Package bytesize is reshard's one way to show a byte count to people and to read one
// from a flag.
package bytesize
