module planaria/benchmarks/porcupine

go 1.19

// Built offline by build.sh, which points this at a local checkout of Porcupine's source
// with a replace directive (there is no module proxy to fetch it from).
require github.com/anishathalye/porcupine v0.0.0
