// edgekd engine testbench (iverilog and Verilator --timing): for each image, write its int8 codes
// into buffer 0, pulse start, count clock cycles until done, read the output codes back.
// tb_inputs.hex: EKD_N_IMG x EKD_IN_SIZE bytes; tb_outputs.txt: one line per image, hex codes and "c <cycles>".
`timescale 1ns / 1ps
`include "edgekd_config.vh"
`ifndef EKD_N_IMG
`define EKD_N_IMG 1
`endif
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
    reg [7:0] images [0:`EKD_N_IMG * `EKD_IN_SIZE - 1];
    integer n, i, fd, cycles;
    initial begin
        $readmemh("tb_inputs.hex", images);
        fd = $fopen("tb_outputs.txt", "w");
        repeat (3) @(negedge clk);
        rst = 1'b0;
        for (n = 0; n < `EKD_N_IMG; n = n + 1) begin
            for (i = 0; i < `EKD_IN_SIZE; i = i + 1) begin
                @(negedge clk);
                host_we = 1'b1; host_addr = i; host_wdata = images[n * `EKD_IN_SIZE + i];
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
        $finish;
    end
endmodule
