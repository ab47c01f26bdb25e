// A dump with elided large constants parses and reprints identically.
module {
  func.func @main() -> (tensor<64x64xbf16>, tensor<64x64xbf16>) {
    %0 = "graph.constant"() {value = dense_resource<model.layers.0.q_proj.weight> : tensor<64x64xbf16>} : () -> tensor<64x64xbf16> loc("q_proj")
    %1 = "graph.constant"() {value = dense_resource<model.layers.0.q_proj.weight> : tensor<64x64xbf16>} : () -> tensor<64x64xbf16> loc("q_proj_alias")
    func.return %0, %1 : tensor<64x64xbf16>, tensor<64x64xbf16> loc(unknown)
  } loc("main")
}
