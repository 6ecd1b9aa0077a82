// edgekd C-simulation testbench (g++ and Vitis HLS csim/cosim).
//   testbench check INPUTS.bin EXPECTED.bin [TOL]   compare with the reference (ONNX Runtime INT8)
//   testbench run INPUTS.bin OUTPUTS.bin [OUT_INT.bin]   run and write dequantized float32 outputs
// Files are raw little-endian float32 (N samples x N_INPUT / N_OUTPUT), int32 for OUT_INT.
// `check` prints one JSON line and returns 0 when every element is within TOL LSB (default 1)
// and the top-1 class matches on every sample.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "firmware/@TOP@.h"
#include "firmware/io.h"

static std::vector<float> read_floats(const char *path, size_t per_sample) {
    std::vector<float> data;
    FILE *f = std::fopen(path, "rb");
    if (!f) { std::fprintf(stderr, "cannot open %s\n", path); std::exit(2); }
    float buf[4096];
    size_t n;
    while ((n = std::fread(buf, sizeof(float), 4096, f)) > 0) data.insert(data.end(), buf, buf + n);
    std::fclose(f);
    if (data.size() % per_sample) { std::fprintf(stderr, "%s: size is not a multiple of %zu\n", path, per_sample); std::exit(2); }
    return data;
}

static void infer(const float *x, result_t *q) {
    input_t xq[N_INPUT];
    quantize_input(x, xq);
    @TOP@(xq, q);
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (v[i] > v[best]) best = i;
    return best;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "check";
    const char *in_path = argc > 2 ? argv[2] : "tb_data/inputs.bin";
    const char *ref_path = argc > 3 ? argv[3] : "tb_data/expected.bin";
    std::vector<float> x = read_floats(in_path, N_INPUT);
    const size_t samples = x.size() / N_INPUT;
    std::vector<result_t> q(N_OUTPUT);
    std::vector<float> y(N_OUTPUT);
    if (std::strcmp(mode, "run") == 0) {
        FILE *out = std::fopen(ref_path, "wb");
        FILE *out_int = argc > 4 ? std::fopen(argv[4], "wb") : nullptr;
        if (!out) { std::fprintf(stderr, "cannot write %s\n", ref_path); return 2; }
        for (size_t s = 0; s < samples; s++) {
            infer(&x[s * N_INPUT], q.data());
            dequantize_output(q.data(), y.data());
            std::fwrite(y.data(), sizeof(float), N_OUTPUT, out);
            if (out_int) {
                int32_t iv[N_OUTPUT];
                for (int i = 0; i < N_OUTPUT; i++) iv[i] = (int32_t)q[i];
                std::fwrite(iv, sizeof(int32_t), N_OUTPUT, out_int);
            }
        }
        std::fclose(out);
        if (out_int) std::fclose(out_int);
        return 0;
    }
    const int tol = argc > 4 ? std::atoi(argv[4]) : 1;
    std::vector<float> ref = read_floats(ref_path, N_OUTPUT);
    if (ref.size() / N_OUTPUT != samples) { std::fprintf(stderr, "inputs and expected outputs differ in samples\n"); return 2; }
    long exact = 0, over = 0, top1 = 0;
    long max_lsb = 0;
    for (size_t s = 0; s < samples; s++) {
        infer(&x[s * N_INPUT], q.data());
        dequantize_output(q.data(), y.data());
        const float *r = &ref[s * N_OUTPUT];
        for (int i = 0; i < N_OUTPUT; i++) {
            long d = std::labs((long)output_int(y[i], i) - (long)output_int(r[i], i));
            exact += d == 0;
            over += d > tol;
            if (d > max_lsb) max_lsb = d;
        }
        top1 += argmax(y.data(), N_OUTPUT) == argmax(r, N_OUTPUT);
    }
    const bool ok = over == 0 && top1 == (long)samples;
    std::printf("{\"samples\": %zu, \"elements\": %zu, \"exact\": %ld, \"max_lsb\": %ld, \"over_tolerance\": %ld, "
                "\"top1_agree\": %ld, \"tolerance_lsb\": %d, \"requant\": \"%s\", \"ok\": %s}\n",
                samples, samples * N_OUTPUT, exact, max_lsb, over, top1, tol,
                EDGEKD_REQUANT_FLOAT ? "float32" : "fixed_point", ok ? "true" : "false");
    return ok ? 0 : 1;
}
