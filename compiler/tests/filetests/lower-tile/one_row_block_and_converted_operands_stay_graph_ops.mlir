// passes: tile,plan-memory,lower-tile
// Not taken (yet): a matmul of one row block (a decode step's: the multicast kernel serves it),
// and one whose operand is stored in another type than the matrix engine's (an f32 input of a
// bf16 compile, converted on chip by the kernel generator).
module attributes {llmpu.precision = "bf16", llmpu.target = "edge"} {
  func.func @main(%arg0: tensor<16x64xf32>, %arg1: tensor<64x64xf32>, %arg2: tensor<128x64xf32>) -> (tensor<16x64xf32>, tensor<128x64xf32>) {
    %0 = "graph.exp"(%arg0) : (tensor<16x64xf32>) -> tensor<16x64xf32> loc("Exp_0")
    %1 = "graph.matmul"(%0, %arg1) : (tensor<16x64xf32>, tensor<64x64xf32>) -> tensor<16x64xf32> loc("Decode_0")
    %2 = "graph.matmul"(%arg2, %arg1) {tile = array<i64: 32, 32, 32>} : (tensor<128x64xf32>, tensor<64x64xf32>) -> tensor<128x64xf32> loc("Input_0")
    func.return %1, %2 : tensor<16x64xf32>, tensor<128x64xf32> loc(unknown)
  } loc("main")
}
