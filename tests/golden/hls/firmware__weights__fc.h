#ifndef EDGEKD_W_FC_H_
#define EDGEKD_W_FC_H_

#include <cstdint>

// dense fc: integer weights (zero point removed), int32 bias, requantization

static const int8_t w_fc[24] = {
    -57, 81, 44, -127, -27, 91, 14, -119, 68, 59, 88, -83, -105, 93, -122, 11,
    -107, -51, -5, -20, -25, -120, -126, -96
};

static const int32_t b_fc[3] = {
    -492, 170, 25
};

static const float mf_fc[3] = {
    0.015625f, 0.015625f, 0.015625f
};

static const int32_t m_fc[3] = {
    1073741824, 1073741824, 1073741824
};

static const int8_t s_fc[3] = {
    36, 36, 36
};

#endif
