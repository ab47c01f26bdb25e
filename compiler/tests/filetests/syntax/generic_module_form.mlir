"builtin.module"() ({
  "func.func"() <{function_type = (tensor<2xf32>) -> tensor<2xf32>, sym_name = "f"}> ({
  ^bb0(%x: tensor<2xf32>):
    %y = "graph.sqrt"(%x) : (tensor<2xf32>) -> tensor<2xf32> loc("file.onnx":3:7)
    "func.return"(%y) : (tensor<2xf32>) -> ()
  }) : () -> ()
}) : () -> ()
