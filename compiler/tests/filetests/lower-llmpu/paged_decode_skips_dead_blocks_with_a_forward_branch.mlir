// passes: kv-layout,tile,plan-memory,lower-llmpu
// Paged decode attention skips the KV blocks past the live length at run time: `llmpu.bge` goes
// forward to ^bb2 when no block is left, else falls through to ^bb1, which ends by falling into ^bb2.
module attributes {llmpu.precision = "fp32", llmpu.target = "edge"} {
  func.func @main(%q: tensor<1x2x1x8xf32>, %pk: tensor<1x1x16x8xf32>, %pv: tensor<1x1x16x8xf32>, %nk: tensor<1x1x1x8xf32>, %nv: tensor<1x1x1x8xf32>) -> (tensor<1x2x1x8xf32>, tensor<1x1x17x8xf32>, tensor<1x1x17x8xf32>) {
    %kpast = "graph.concat"(%pk) {axis = -2 : i64} : (tensor<1x1x16x8xf32>) -> tensor<1x1x16x8xf32> loc("Concat_noop")
    %k = "graph.concat"(%kpast, %nk) {axis = -2 : i64} : (tensor<1x1x16x8xf32>, tensor<1x1x1x8xf32>) -> tensor<1x1x17x8xf32> loc("Concat_k")
    %v = "graph.concat"(%pv, %nv) {axis = 2 : i64} : (tensor<1x1x16x8xf32>, tensor<1x1x1x8xf32>) -> tensor<1x1x17x8xf32> loc("Concat_v")
    %o = "graph.fused_attention"(%q, %k, %v) {causal = true, scale = 0.35355339 : f32} : (tensor<1x2x1x8xf32>, tensor<1x1x17x8xf32>, tensor<1x1x17x8xf32>) -> tensor<1x2x1x8xf32> loc("Attention")
    func.return %o, %k, %v : tensor<1x2x1x8xf32>, tensor<1x1x17x8xf32>, tensor<1x1x17x8xf32> loc(unknown)
  } loc("main")
}
