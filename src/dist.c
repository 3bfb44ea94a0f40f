#include "dist.h"

#ifdef NORMGPT_MPI
#include <limits.h>
#include <mpi.h>
#include <string.h>

static int rank = 0, world = 1, local_ranks = 1;

// Errors are returned rather than fatal inside MPI, so a failure reads as one line naming the call.
static void check(int rc, const char *call) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    die(1, "rank %d of %d: %s failed (another rank probably died): %.*s", rank, world, call, len, text);
}

void dist_init(int *argc, char ***argv) {
    MPI_Init(argc, argv);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Comm local;
    check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local),
          "MPI_Comm_split_type");
    MPI_Comm_size(local, &local_ranks);
    MPI_Comm_free(&local);
    if (rank != 0) snprintf(die_prefix, sizeof die_prefix, "rank %d: ", rank);
}

void dist_finalize(void) { MPI_Finalize(); }
int dist_rank(void) { return rank; }
int dist_world(void) { return world; }
int dist_local_ranks(void) { return local_ranks; }

const char *dist_library(void) {
    static char name[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(name, &len);
    name[strcspn(name, "\n")] = '\0';  // the first line, its tabs as spaces: "MPICH Version: 4.0.2"
    for (char *c = name; *c; c++) if (*c == '\t') *c = ' ';
    return name;
}

// MPI counts are ints: large buffers go in chunks of at most INT_MAX elements.
static void sum(void *x, size_t n, size_t elem, MPI_Datatype type) {
    for (size_t done = 0; done < n;) {
        int count = n - done > INT_MAX ? INT_MAX : (int)(n - done);
        check(MPI_Allreduce(MPI_IN_PLACE, (char *)x + done * elem, count, type, MPI_SUM, MPI_COMM_WORLD),
              "MPI_Allreduce");
        done += (size_t)count;
    }
}

void dist_sum_real(real *x, size_t n) {
    if (world > 1) sum(x, n, sizeof(real), sizeof(real) == sizeof(float) ? MPI_FLOAT : MPI_DOUBLE);
}
void dist_sum_double(double *x, size_t n) {
    if (world > 1) sum(x, n, sizeof(double), MPI_DOUBLE);
}

void dist_broadcast(void *data, size_t bytes) {
    for (size_t done = 0; world > 1 && done < bytes;) {
        int count = bytes - done > INT_MAX ? INT_MAX : (int)(bytes - done);
        check(MPI_Bcast((char *)data + done, count, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast");
        done += (size_t)count;
    }
}

void dist_check_identical(const void *data, size_t bytes, const char *what) {
    if (world == 1) return;
    uint64_t hash = fnv1a(FNV_OFFSET, data, bytes), root_hash = hash;
    dist_broadcast(&root_hash, sizeof root_hash);
    if (hash != root_hash)
        die(1, "the %s of rank %d differ from rank 0's: the ranks diverged (mismatched builds or machines?)", what,
            rank);
}

#else  // one process

void dist_init(int *argc, char ***argv) {}
void dist_finalize(void) {}
int dist_rank(void) { return 0; }
int dist_world(void) { return 1; }
int dist_local_ranks(void) { return 1; }
const char *dist_library(void) { return "none (built without MPI)"; }
void dist_sum_real(real *x, size_t n) {}
void dist_sum_double(double *x, size_t n) {}
void dist_broadcast(void *data, size_t bytes) {}
void dist_check_identical(const void *data, size_t bytes, const char *what) {}

#endif
