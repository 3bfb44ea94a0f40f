// A small seedable random number generator (SplitMix64). Its whole state is one integer, which
// makes it trivial to store in a checkpoint and to derive independent streams from one seed.
#ifndef NORMGPT_RNG_H
#define NORMGPT_RNG_H
#include <stdint.h>

typedef struct { uint64_t state; } Rng;

// A stream for `purpose` derived from `seed`, so that e.g. init and data order never share numbers.
Rng rng_stream(uint64_t seed, uint64_t purpose);
uint64_t rng_u64(Rng *r);
double rng_uniform(Rng *r);              // [0, 1)
double rng_normal(Rng *r);               // standard normal (Box-Muller, one value per call)
uint64_t rng_below(Rng *r, uint64_t n);  // uniform integer in [0, n), n > 0

#endif
