// edgekd engine testbench (iverilog and Verilator --timing): for each image, write its int8 codes
// into buffer 0, pulse start, count clock cycles until done, read the output codes back.
// +in=FILE (default tb_inputs.hex): one hex byte per line, +n images of EKD_IN_SIZE bytes;
// +out=FILE (default tb_outputs.txt): one line per image, the output codes in hex and "c <cycles>".
`timescale 1ns / 1ps
`include "edgekd_config.vh"
module tb;
    reg clk = 1'b0;
    always #5 clk = ~clk;
    reg rst = 1'b1, start = 1'b0, host_we = 1'b0;
    reg [`EKD_AW-1:0] host_addr = 0;
    reg [7:0] host_wdata = 8'd0;
    wire done;
    wire [7:0] host_rdata;
    edgekd_engine dut (.clk(clk), .rst(rst), .start(start), .done(done), .host_we(host_we), .host_addr(host_addr),
                       .host_wdata(host_wdata), .host_rdata(host_rdata));
    reg [8*1024-1:0] in_name, out_name;
    reg [7:0] value;
    integer n, n_img, i, fin, fd, cycles, got;
    initial begin
        if (!$value$plusargs("n=%d", n_img)) n_img = 1;
        if (!$value$plusargs("in=%s", in_name)) in_name = "tb_inputs.hex";
        if (!$value$plusargs("out=%s", out_name)) out_name = "tb_outputs.txt";
        fin = $fopen(in_name, "r");
        fd = $fopen(out_name, "w");
        if (fin == 0 || fd == 0) begin
            $display("edgekd tb: cannot open %0s or %0s", in_name, out_name);
            $finish;
        end
        repeat (3) @(negedge clk);
        rst = 1'b0;
        for (n = 0; n < n_img; n = n + 1) begin
            for (i = 0; i < `EKD_IN_SIZE; i = i + 1) begin
                got = $fscanf(fin, "%h\n", value);
                @(negedge clk);
                host_we = 1'b1; host_addr = i; host_wdata = value;
            end
            @(negedge clk);
            host_we = 1'b0; start = 1'b1;
            @(negedge clk);
            start = 1'b0; cycles = 1;
            while (!done) begin
                @(negedge clk);
                cycles = cycles + 1;
            end
            for (i = 0; i < `EKD_OUT_SIZE; i = i + 1) begin
                host_addr = i;
                @(negedge clk);
                $fwrite(fd, "%02x ", host_rdata);
            end
            $fwrite(fd, "c %0d\n", cycles);
        end
        $fclose(fd);
        $fclose(fin);
        $finish;
    end
endmodule
