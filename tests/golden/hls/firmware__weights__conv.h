#ifndef EDGEKD_W_CONV_H_
#define EDGEKD_W_CONV_H_

#include <cstdint>

// conv conv: integer weights (zero point removed), int32 bias, requantization

static const int8_t w_conv[18] = {
    89, 35, 3, -59, -49, -117, -108, -123, -83, 80, 38, 105, 1, 27, 120, 59,
    34, 11
};

static const int32_t b_conv[2] = {
    35, 261
};

static const float mf_conv[2] = {
    0.0078125f, 0.015625f
};

static const int32_t m_conv[2] = {
    1073741824, 1073741824
};

static const int8_t s_conv[2] = {
    37, 36
};

#endif
