// Data-parallel ranks. Built with MPI (`make MPI=1`, which defines NORMGPT_MPI) these wrap MPI on
// MPI_COMM_WORLD; built without, they describe one process of one and every reduction is the
// identity, so the trainer has a single code path. Any failed MPI call: one line, exit 1.
#ifndef NORMGPT_DIST_H
#define NORMGPT_DIST_H
#include "common.h"

// Start (MPI_Init under mpirun/mpiexec, or as a singleton); call once, before anything else.
void dist_init(int *argc, char ***argv);
void dist_finalize(void);
int dist_rank(void);         // 0 .. dist_world() - 1; rank 0 alone writes the log and checkpoints
int dist_world(void);        // number of ranks
int dist_local_ranks(void);  // ranks sharing this machine (they split its cores)
// "MPICH 4.0.2" style name of the MPI library, or "none (built without MPI)".
const char *dist_library(void);
// In-place sums over all ranks; every rank gets the same result.
void dist_sum_real(real *x, size_t n);
void dist_sum_double(double *x, size_t n);
// Copy rank 0's bytes to every rank (configs, parameters, optimizer state, run state).
void dist_broadcast(void *data, size_t bytes);
// Exit on any rank whose copy of `data` differs from rank 0's (a hash is compared): data-parallel
// ranks must hold identical parameters, and a silent divergence would make rank 0's checkpoints lie.
void dist_check_identical(const void *data, size_t bytes, const char *what);

#endif
