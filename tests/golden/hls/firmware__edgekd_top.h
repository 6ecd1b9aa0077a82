#ifndef EDGEKD_TOP_H_
#define EDGEKD_TOP_H_

#include "defines.h"

// One sample: quantized input (int8, scale 0.0625, zero point 0) ->
// quantized output (int8, scale 0.25, zero point 0).
void edgekd_top(const input_t input[N_INPUT], result_t output[N_OUTPUT]);

#endif
