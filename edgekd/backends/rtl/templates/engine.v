// edgekd folded int8 engine: P multiply-accumulate lanes, weights in block RAM, a pipelined
// round-half-to-even requantizer. The layer table (edgekd_layers.vh) and the sizes
// (edgekd_config.vh) are generated per model; this file is the same for every model.
//
// Each layer reads one activation buffer and writes the other (ping-pong, both block RAM).
// MAC layers (Conv, Dense = 1x1 Conv on a 1x1 plane) are output stationary: for each group of
// P output channels and each output pixel, every tap reads one activation byte (broadcast) and
// one P-wide weight word; lane l accumulates output channel g*P + l. MaxPool uses lane 0 as a
// running maximum. Finished accumulators move to a drain register bank (double buffering) and
// leave one per cycle through the requantizer while the next pixel accumulates.
`default_nettype none
`include "edgekd_config.vh"

module ekd_ram #(parameter W = 8, parameter AW = 10, parameter DEPTH = 1024) (
    input wire clk, input wire we, input wire [AW-1:0] waddr, input wire [W-1:0] wdata,
    input wire [AW-1:0] raddr, output reg [W-1:0] rdata);
    reg [W-1:0] mem [0:DEPTH-1];
    always @(posedge clk) begin
        if (we) mem[waddr] <= wdata;
        rdata <= mem[raddr];
    end
endmodule

module ekd_rom #(parameter W = 64, parameter AW = 9, parameter DEPTH = 512, parameter FILE = "weights.hex") (
    input wire clk, input wire [AW-1:0] addr, output reg [W-1:0] data);
    reg [W-1:0] mem [0:DEPTH-1];
    initial $readmemh(FILE, mem);
    always @(posedge clk) data <= mem[addr];
endmodule

module edgekd_engine (
    input wire clk, input wire rst, input wire start, output reg done,
    input wire host_we, input wire [`EKD_AW-1:0] host_addr, input wire [7:0] host_wdata,
    output wire [7:0] host_rdata);
    localparam AW = `EKD_AW;
    localparam P = `EKD_P;
    localparam ACC_W = `EKD_ACC_W;
    localparam CW = `EKD_CW;            // counters and table fields (signed)
    localparam WAW = `EKD_WAW;          // weight ROM address bits
    localparam CAW = `EKD_CAW;          // channel (bias, shift) ROM address bits
    localparam LIW = `EKD_LIW;          // layer index bits
    localparam PW = 18;                 // 10-bit activation x 8-bit weight
    localparam MW = `EKD_MULT_W;        // requantization multiplier bits; 0: power-of-two scales, a pure shift
    localparam CHW = ACC_W + 6 + MW;    // channel ROM word: {multiplier, shift, bias}
    localparam PROD_W = ACC_W + MW + 2;
    localparam T_W = PROD_W + 2;
    localparam FLUSH = P + 13;          // cycles from the last issued tap to the last write (edgekd codegen FLUSH_EXTRA)

    localparam S_IDLE = 3'd0, S_TABLE = 3'd1, S_LOAD = 3'd2, S_RUN = 3'd3, S_FLUSH = 3'd4;
    reg [2:0] state;
    reg [LIW-1:0] li;
    reg [7:0] flush_cnt;

    // ---------------------------------------------------------------- layer table: registers loaded in S_TABLE
    // (*_m1: the bound minus one, so the loop ends are equality tests on registers)
    reg t_pool, t_src, t_in_signed, t_last, t_rq;  // t_rq: a pool row that requantizes (Relu/Clip rescale)
    reg signed [CW-1:0] t_ngrp_m1, t_lanes, t_lanes_last, t_icn_m1, t_kh_m1, t_kw_m1, t_h, t_w, t_hw, t_oh_m1, t_ow_m1;
    reg signed [CW-1:0] t_ohw, t_sh, t_sw, t_shw, t_ih0, t_iw0, t_ihw0, t_taps, t_taps_m1, t_slots_m1, t_wbase, t_gout;
    reg signed [CW-1:0] t_gch, t_chbase, t_lo, t_hi;
`include "edgekd_layers.vh"

    // ---------------------------------------------------------------- issue: loop counters
    reg signed [CW-1:0] grp, oh, ow, ic, kh, kw, slot, ih0, iw0, ihw0, khw, ic_ch, grp_ch, pix, gout, wgrp, chgrp;
    reg tap_on;  // the current pixel still has taps to issue
    wire running = state == S_RUN;
    wire tap_valid = running && tap_on;
    wire end_pix = slot == t_slots_m1;
    wire last_ow = ow == t_ow_m1;
    wire last_oh = oh == t_oh_m1;
    wire last_grp = grp == t_ngrp_m1;
    wire end_layer = running && end_pix && last_ow && last_oh && last_grp;

    // stage a: partial addresses; stage 0: addresses into the memories; stages 1-2: memory data, products
    reg a_valid, a_first, a_last, s0_valid, s0_in, s0_first, s0_last;
    reg signed [CW-1:0] a_p1, a_p2, a_ih, a_iw;
    reg [WAW-1:0] a_waddr, s0_waddr;
    reg [AW-1:0] s0_addr;
    reg signed [CW-1:0] a_dst, a_ch, a_lanes, s0_dst, s0_ch, s0_lanes;
    reg s1_valid, s1_in, s1_first, s1_last;
    reg signed [CW-1:0] s1_dst, s1_ch, s1_lanes;
    reg s2_valid, s2_first, s2_last;
    reg signed [CW-1:0] s2_dst, s2_ch, s2_lanes;

    always @(posedge clk) begin
        a_valid <= tap_valid;
        a_first <= slot == 0;
        a_last <= slot == t_taps_m1;
        a_p1 <= grp_ch + ic_ch;
        a_p2 <= ihw0 + khw;
        a_ih <= ih0 + kh;
        a_iw <= iw0 + kw;
        a_waddr <= wgrp[WAW-1:0] + slot[WAW-1:0];
        a_dst <= gout + pix;
        a_ch <= chgrp;
        a_lanes <= last_grp ? t_lanes_last : t_lanes;
        s0_valid <= a_valid;
        s0_in <= (a_ih >= 0) && (a_ih < t_h) && (a_iw >= 0) && (a_iw < t_w);
        s0_first <= a_first;
        s0_last <= a_last;
        s0_addr <= a_p1[AW-1:0] + a_p2[AW-1:0] + a_iw[AW-1:0];
        s0_waddr <= a_waddr;
        {s0_dst, s0_ch, s0_lanes} <= {a_dst, a_ch, a_lanes};
        {s1_valid, s1_in, s1_first, s1_last, s1_dst, s1_ch, s1_lanes} <=
            {s0_valid, s0_in, s0_first, s0_last, s0_dst, s0_ch, s0_lanes};
        {s2_valid, s2_first, s2_last, s2_dst, s2_ch, s2_lanes} <= {s1_valid, s1_first, s1_last, s1_dst, s1_ch, s1_lanes};
    end

    always @(posedge clk) begin
        if (rst) begin
            state <= S_IDLE;
            done <= 1'b0;
            li <= 0;
        end else begin
            case (state)
                S_IDLE: if (start) begin li <= 0; done <= 1'b0; state <= S_TABLE; end
                S_TABLE: state <= S_LOAD;
                S_LOAD: begin
                    {grp, oh, ow, ic, kh, kw, slot, khw, ic_ch, grp_ch, pix, gout} <= 0;
                    ih0 <= t_ih0; iw0 <= t_iw0; ihw0 <= t_ihw0; wgrp <= t_wbase; chgrp <= t_chbase; tap_on <= 1'b1;
                    state <= S_RUN;
                end
                S_RUN: begin
                    if (tap_valid) begin  // kw fastest, then kh, then input channel
                        if (slot == t_taps_m1) tap_on <= 1'b0;
                        if (kw != t_kw_m1) kw <= kw + 1;
                        else begin
                            kw <= 0;
                            if (kh != t_kh_m1) begin kh <= kh + 1; khw <= khw + t_w; end
                            else begin
                                kh <= 0; khw <= 0;
                                if (ic != t_icn_m1) begin ic <= ic + 1; ic_ch <= ic_ch + t_hw; end
                                else begin ic <= 0; ic_ch <= 0; end
                            end
                        end
                    end
                    if (!end_pix) slot <= slot + 1;
                    else begin  // next pixel, row, group
                        slot <= 0;
                        tap_on <= 1'b1;
                        pix <= pix + 1;
                        if (!last_ow) begin ow <= ow + 1; iw0 <= iw0 + t_sw; end
                        else begin
                            ow <= 0; iw0 <= t_iw0;
                            if (!last_oh) begin oh <= oh + 1; ih0 <= ih0 + t_sh; ihw0 <= ihw0 + t_shw; end
                            else begin
                                oh <= 0; ih0 <= t_ih0; ihw0 <= t_ihw0; pix <= 0;
                                grp <= grp + 1; gout <= gout + t_gout; grp_ch <= grp_ch + t_gch;
                                wgrp <= wgrp + t_taps; chgrp <= chgrp + P;
                            end
                        end
                    end
                    if (end_layer) begin state <= S_FLUSH; flush_cnt <= FLUSH; end
                end
                S_FLUSH: begin
                    if (flush_cnt != 0) flush_cnt <= flush_cnt - 1;
                    else if (t_last) begin state <= S_IDLE; done <= 1'b1; end
                    else begin li <= li + 1; state <= S_TABLE; end
                end
                default: state <= S_IDLE;
            endcase
        end
    end

    // ---------------------------------------------------------------- memories
    wire idle = state == S_IDLE;
    wire [7:0] buf0_q, buf1_q;
    wire [P*8-1:0] w_q;
    wire [CHW-1:0] ch_q;
    reg r5_valid;
    reg [AW-1:0] r5_dst;
    reg [7:0] r5_y;
    reg signed [CW-1:0] drain_cnt, drain_dst, drain_ch;
    ekd_ram #(.W(8), .AW(AW), .DEPTH(`EKD_BUF0)) buf0 (
        .clk(clk), .we(idle ? host_we : (r5_valid && t_src)), .waddr(idle ? host_addr : r5_dst),
        .wdata(idle ? host_wdata : r5_y), .raddr(idle ? host_addr : s0_addr), .rdata(buf0_q));
    ekd_ram #(.W(8), .AW(AW), .DEPTH(`EKD_BUF1)) buf1 (
        .clk(clk), .we(!idle && r5_valid && !t_src), .waddr(r5_dst), .wdata(r5_y),
        .raddr(idle ? host_addr : s0_addr), .rdata(buf1_q));
    ekd_rom #(.W(P*8), .AW(WAW), .DEPTH(`EKD_WDEPTH), .FILE("weights.hex")) wrom (.clk(clk), .addr(s0_waddr), .data(w_q));
    ekd_rom #(.W(CHW), .AW(CAW), .DEPTH(`EKD_CDEPTH), .FILE("channels.hex")) crom (
        .clk(clk), .addr(drain_ch[CAW-1:0]), .data(ch_q));
    assign host_rdata = `EKD_OUT_BUF ? buf1_q : buf0_q;
    wire [7:0] act_q = t_src ? buf1_q : buf0_q;

    // ---------------------------------------------------------------- lanes: product, accumulate, drain bank
    wire signed [9:0] x_ext = t_in_signed ? {{2{act_q[7]}}, act_q} : {2'b00, act_q};
    wire signed [9:0] d = s1_in ? x_ext : (t_pool ? -10'sd256 : 10'sd0);  // padding: 0 for MAC, below any code for max
    wire capture = s2_valid && s2_last;  // the pixel's last tap: its sums go to the drain bank
    wire drain_go = drain_cnt != 0;
    wire [(P+1)*ACC_W-1:0] drain_bus;
    assign drain_bus[P*ACC_W +: ACC_W] = {ACC_W{1'b0}};
    genvar l;
    generate
        for (l = 0; l < P; l = l + 1) begin : lane
            reg signed [PW-1:0] prod;
            reg signed [ACC_W-1:0] acc, dr;
            wire signed [ACC_W-1:0] sum = s2_first ? prod : acc + prod;
            wire signed [ACC_W-1:0] mx;
            if (l == 0) begin : pool  // MaxPool: lane 0 keeps the running maximum
                reg signed [9:0] pd;
                always @(posedge clk) pd <= d;
                assign mx = (s2_first || pd > acc) ? pd : acc;
            end else begin : nopool
                assign mx = sum;
            end
            wire signed [ACC_W-1:0] next = t_pool ? mx : sum;
            assign drain_bus[l*ACC_W +: ACC_W] = dr;
            always @(posedge clk) begin
                prod <= d * $signed(w_q[8*l +: 8]);
                if (s2_valid) acc <= next;
                if (capture) dr <= next;
                else if (drain_go) dr <= drain_bus[(l+1)*ACC_W +: ACC_W];
            end
        end
    endgenerate
    always @(posedge clk) begin
        if (rst) drain_cnt <= 0;
        else if (capture) begin drain_cnt <= s2_lanes; drain_dst <= s2_dst; drain_ch <= s2_ch; end
        else if (drain_go) begin drain_cnt <= drain_cnt - 1; drain_dst <= drain_dst + t_ohw; drain_ch <= drain_ch + 1; end
    end

    // ---------------------------------------------------------------- requantizer: 6 registered stages
    // y = clamp(rne((acc + bias) * m / 2^s), lo, hi): round half to even, as ONNX Runtime (zero point 0);
    // with power-of-two scales m = 1 (MW = 0) and the product stage is a plain register
    reg r1_valid, r2_valid, rp_valid, r3_valid, r4_valid;
    reg signed [ACC_W-1:0] r1_v;
    reg signed [ACC_W:0] r2_sum;
    reg signed [PROD_W-1:0] rp_p;
    reg [PROD_W:0] rp_half_m1;
    reg signed [T_W-1:0] r3_t, r4_r;
    reg [5:0] r2_s, rp_s, r3_s;
    reg [AW-1:0] r1_dst, r2_dst, rp_dst, r3_dst, r4_dst;
    wire signed [ACC_W-1:0] bias = t_pool ? {ACC_W{1'b0}} : ch_q[ACC_W-1:0];
    wire [5:0] shift = (t_pool && !t_rq) ? 6'd0 : ch_q[ACC_W+5:ACC_W];
    wire odd = (rp_s == 0) ? 1'b0 : rp_p[rp_s];
    generate
        if (MW == 0) begin : shift_only
            always @(posedge clk) rp_p <= r2_sum;
        end else begin : multiply
            reg [MW-1:0] r2_m;
            always @(posedge clk) begin
                r2_m <= (t_pool && !t_rq) ? {{(MW-1){1'b0}}, 1'b1} : ch_q[ACC_W+6 +: MW];
                rp_p <= r2_sum * $signed({1'b0, r2_m});
            end
        end
    endgenerate
    always @(posedge clk) begin
        r1_valid <= !rst && drain_go; r1_v <= drain_bus[ACC_W-1:0]; r1_dst <= drain_dst[AW-1:0];
        r2_valid <= r1_valid; r2_sum <= r1_v + bias; r2_s <= shift; r2_dst <= r1_dst;
        rp_valid <= r2_valid; rp_s <= r2_s; rp_dst <= r2_dst;
        rp_half_m1 <= {(PROD_W+1){1'b1}} >> (PROD_W + 2 - r2_s);  // 2^(s-1) - 1, 0 for s = 0
        r3_valid <= rp_valid; r3_t <= rp_p + $signed({1'b0, rp_half_m1}) + $signed({1'b0, odd}); r3_s <= rp_s;
        r3_dst <= rp_dst;
        r4_valid <= r3_valid; r4_r <= r3_t >>> r3_s; r4_dst <= r3_dst;
        r5_valid <= r4_valid; r5_dst <= r4_dst;
        r5_y <= (r4_r < t_lo) ? t_lo[7:0] : ((r4_r > t_hi) ? t_hi[7:0] : r4_r[7:0]);
    end
endmodule
`default_nettype wire
