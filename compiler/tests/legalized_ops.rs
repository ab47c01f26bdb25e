//! Ops without a kernel of their own before this stage, end to end on the emulator against the
//! reference interpreter: CumSum (the vector-unit scan: every `exclusive` / `reverse`
//! combination, a non-last axis, f32 and i64, lengths that are not powers of two), GatherND
//! (batch dims, negative components), GatherElements (every axis, narrower indices), ScatterND
//! (constant indices; refused with the reason otherwise), TopK (ties, smallest, any axis), OneHot,
//! Tile, IsNaN as imported, Trilu with k
//! given at run time and Quantize / DequantizeLinear (per axis, blocked, ties and saturation),
//! each on edge and datacenter.

mod common;
use common::{checked, compile_text, values};
use llmpu_compiler::backend::Precision;
use llmpu_compiler::interp;
use llmpu_compiler::parser::parse_module;
use llmpu_isa::DType;
use llmpu_runtime::compare::{Tolerance, compare};
use llmpu_runtime::{Tensor, run};

/// An input: name, element type, shape and values.
struct Input {
    name: &'static str,
    dt: DType,
    shape: Vec<u64>,
    vals: Vec<f32>,
}

fn interp_tensor(i: &Input) -> interp::Tensor {
    let shape: Vec<usize> = i.shape.iter().map(|&d| d as usize).collect();
    match i.dt {
        DType::I64 => interp::Tensor::new(shape, i.vals.iter().map(|&v| v as i64).collect()),
        DType::I8 => interp::Tensor::new(shape, i.vals.iter().map(|&v| v as i8).collect()),
        _ => interp::Tensor::new(shape, i.vals.clone()),
    }
}

/// Compiles `src` for `target` in fp32, runs it on the emulator and compares output `y` with
/// the interpreter's (integers exactly).
fn matches_interpreter(src: &str, inputs: &[Input], target: &str) {
    let prog = compile_text(src, target, Precision::Fp32);
    let rt: Vec<(String, Tensor)> = inputs
        .iter()
        .map(|i| {
            let t = Tensor::from_f32(i.dt, i.shape.clone(), &i.vals).unwrap();
            (i.name.to_string(), t)
        })
        .collect();
    let res = run(&prog, &rt, &checked()).unwrap_or_else(|e| panic!("{target}: emulator: {e}"));
    let m = parse_module(src).unwrap();
    let refs: Vec<interp::Tensor> = inputs.iter().map(interp_tensor).collect();
    let want = interp::run(&m, &refs).unwrap().remove(0);
    let got = res.output("y").expect("output y");
    let wv: Vec<f32> = want.to_f64_vec().iter().map(|&v| v as f32).collect();
    let shape: Vec<u64> = want.shape.iter().map(|&d| d as u64).collect();
    let want = Tensor::from_f32(got.dtype, shape, &wv).unwrap();
    let cmp = compare("y", got, &want, Tolerance::FP32).unwrap();
    assert!(cmp.pass, "{target}: {cmp}");
    if got.dtype != DType::F32 {
        assert_eq!(
            got.to_f32(),
            want.to_f32(),
            "{target}: integers must be exact"
        );
    }
}

fn cumsum_src(shape: &[u64], ty: &str, axis: i64, exclusive: u8, reverse: u8) -> String {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let t = format!("tensor<{}x{ty}>", dims.join("x"));
    format!(
        r#"module {{
  func.func @main(%x: {t} {{graph.name = "x"}}) -> ({t} {{graph.name = "y"}}) {{
    %a = "graph.constant"() {{value = dense<{axis}> : tensor<i64>}} : () -> tensor<i64> loc("axis")
    %y = "graph.cumsum"(%x, %a) {{exclusive = {exclusive} : i64, reverse = {reverse} : i64}} : ({t}, tensor<i64>) -> {t} loc("CumSum")
    func.return %y : {t}
  }}
}}
"#
    )
}

#[test]
fn cumsum_matches_the_interpreter_for_every_flag_axis_and_type() {
    for (shape, axis) in [(vec![5u64, 7], 1i64), (vec![3, 9, 2], 1), (vec![6, 4], 0)] {
        let n: u64 = shape.iter().product();
        for (dt, ty) in [(DType::F32, "f32"), (DType::I64, "i64")] {
            let vals: Vec<f32> = values(n as usize, 7)
                .iter()
                .map(|&v| {
                    if dt == DType::I64 {
                        (v * 50.0).round()
                    } else {
                        v
                    }
                })
                .collect();
            for exclusive in [0, 1] {
                for reverse in [0, 1] {
                    let src = cumsum_src(&shape, ty, axis, exclusive, reverse);
                    let x = Input {
                        name: "x",
                        dt,
                        shape: shape.clone(),
                        vals: vals.clone(),
                    };
                    for target in ["edge", "datacenter"] {
                        matches_interpreter(&src, std::slice::from_ref(&x), target);
                    }
                }
            }
        }
    }
}

#[test]
fn gather_nd_with_batch_dims_and_negative_indices_matches_the_interpreter() {
    let src = r#"module {
  func.func @main(%d: tensor<2x3x4x5xf32> {graph.name = "d"}, %i: tensor<2x6x2xi64> {graph.name = "i"}) -> (tensor<2x6x5xf32> {graph.name = "y"}) {
    %y = "graph.gather_nd"(%d, %i) {batch_dims = 1 : i64} : (tensor<2x3x4x5xf32>, tensor<2x6x2xi64>) -> tensor<2x6x5xf32> loc("GatherND")
    func.return %y : tensor<2x6x5xf32>
  }
}
"#;
    let idx: Vec<f32> = [0, 0, 2, 3, -1, -1, 1, -4, -3, 2, 0, 1]
        .iter()
        .chain(&[2, 1, 0, 0, -2, 3, 1, 1, 2, -1, -3, -4])
        .map(|&v| v as f32)
        .collect();
    let inputs = [
        Input {
            name: "d",
            dt: DType::F32,
            shape: vec![2, 3, 4, 5],
            vals: values(120, 3),
        },
        Input {
            name: "i",
            dt: DType::I64,
            shape: vec![2, 6, 2],
            vals: idx,
        },
    ];
    for target in ["edge", "datacenter"] {
        matches_interpreter(src, &inputs, target);
    }
}

fn gather_elements_src(ds: &[u64], is: &[u64], axis: i64) -> String {
    let (d, i, y) = (
        tensor_type(ds),
        tensor_type(is).replace("f32", "i64"),
        tensor_type(is),
    );
    format!(
        r#"module {{
  func.func @main(%d: {d} {{graph.name = "d"}}, %i: {i} {{graph.name = "i"}}) -> ({y} {{graph.name = "y"}}) {{
    %y = "graph.gather_elements"(%d, %i) {{axis = {axis} : i64}} : ({d}, {i}) -> {y} loc("GatherElements")
    func.return %y : {y}
  }}
}}
"#
    )
}

#[test]
fn gather_elements_follows_the_onnx_examples_in_the_interpreter() {
    // The operator's documented examples: axis 1 on 2×2, axis 0 with a negative index on 3×3.
    let run = |ds: &[u64], is: &[u64], axis: i64, d: Vec<f32>, i: Vec<i64>| -> Vec<f64> {
        let m = parse_module(&gather_elements_src(ds, is, axis)).unwrap();
        let us = |s: &[u64]| s.iter().map(|&x| x as usize).collect::<Vec<_>>();
        let ins = [
            interp::Tensor::new(us(ds), d),
            interp::Tensor::new(us(is), i),
        ];
        interp::run(&m, &ins).unwrap().remove(0).to_f64_vec()
    };
    assert_eq!(
        run(&[2, 2], &[2, 2], 1, vec![1., 2., 3., 4.], vec![0, 0, 1, 0]),
        [1., 1., 4., 3.]
    );
    assert_eq!(
        run(
            &[3, 3],
            &[2, 3],
            0,
            (1..=9).map(|v| v as f32).collect(),
            vec![1, 2, 0, 2, 0, -1]
        ),
        [4., 8., 3., 7., 2., 9.]
    );
}

#[test]
fn gather_elements_on_every_axis_with_negative_and_narrower_indices_matches_the_interpreter() {
    // Indices narrower than the data on the other dims (allowed), every axis, wrapped negatives.
    let ds = [3u64, 4, 5];
    for (axis, is) in [(0i64, [2u64, 4, 3]), (1, [3, 6, 2]), (-1, [2, 3, 7])] {
        let a = if axis < 0 { axis + 3 } else { axis } as usize;
        let n = ds[a] as i64;
        let count: u64 = is.iter().product();
        let idx: Vec<f32> = (0..count as i64)
            .map(|k| ((k * 7 + 3) % (2 * n) - n) as f32)
            .collect();
        let inputs = [
            Input {
                name: "d",
                dt: DType::F32,
                shape: ds.to_vec(),
                vals: values(60, 5),
            },
            Input {
                name: "i",
                dt: DType::I64,
                shape: is.to_vec(),
                vals: idx,
            },
        ];
        for target in ["edge", "datacenter"] {
            matches_interpreter(&gather_elements_src(&ds, &is, axis), &inputs, target);
        }
    }
}

#[test]
fn isnan_as_imported_is_true_exactly_at_nans_on_the_emulator() {
    // The importer spells IsNaN `not(equal(x, x))`.
    let src = r#"module {
  func.func @main(%x: tensor<2x4xf32> {graph.name = "x"}) -> (tensor<2x4xi1> {graph.name = "y"}) {
    %e = "graph.equal"(%x, %x) : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xi1> loc("IsNaN")
    %y = "graph.not"(%e) : (tensor<2x4xi1>) -> tensor<2x4xi1> loc("IsNaN")
    func.return %y : tensor<2x4xi1>
  }
}
"#;
    let x = [
        1.0,
        f32::NAN,
        -0.0,
        f32::INFINITY,
        f32::NAN,
        -3.5,
        f32::NEG_INFINITY,
        0.0,
    ];
    let inputs = [Input {
        name: "x",
        dt: DType::F32,
        shape: vec![2, 4],
        vals: x.to_vec(),
    }];
    let m = parse_module(src).unwrap();
    let want = interp::run(&m, &[interp_tensor(&inputs[0])])
        .unwrap()
        .remove(0);
    assert_eq!(want.to_f64_vec(), [0., 1., 0., 0., 1., 0., 0., 0.]);
    for target in ["edge", "datacenter"] {
        matches_interpreter(src, &inputs, target);
    }
}

#[test]
fn scatter_nd_follows_the_onnx_example_and_matches_on_the_emulator_with_constant_indices() {
    // The operator's documented example 2: slices 0 and 2 of a 4x4x4 tensor replaced.
    let src = r#"module {
  func.func @main(%d: tensor<4x4x4xf32> {graph.name = "d"}, %u: tensor<2x4x4xf32> {graph.name = "u"}) -> (tensor<4x4x4xf32> {graph.name = "y"}) {
    %i = "graph.constant"() {value = dense<[[0], [2]]> : tensor<2x1xi64>} : () -> tensor<2x1xi64> loc("idx")
    %y = "graph.scatter_nd"(%d, %i, %u) : (tensor<4x4x4xf32>, tensor<2x1xi64>, tensor<2x4x4xf32>) -> tensor<4x4x4xf32> loc("ScatterND")
    func.return %y : tensor<4x4x4xf32>
  }
}
"#;
    let row = [
        1., 2., 3., 4., 5., 6., 7., 8., 8., 7., 6., 5., 4., 3., 2., 1.,
    ];
    let data: Vec<f32> = [
        row,
        row,
        [
            8., 7., 6., 5., 4., 3., 2., 1., 1., 2., 3., 4., 5., 6., 7., 8.,
        ],
        row,
    ]
    .concat();
    let upd: Vec<f32> = [
        [5.; 4], [6.; 4], [7.; 4], [8.; 4], [1.; 4], [2.; 4], [3.; 4], [4.; 4],
    ]
    .concat();
    let inputs = [
        Input {
            name: "d",
            dt: DType::F32,
            shape: vec![4, 4, 4],
            vals: data.clone(),
        },
        Input {
            name: "u",
            dt: DType::F32,
            shape: vec![2, 4, 4],
            vals: upd.clone(),
        },
    ];
    let m = parse_module(src).unwrap();
    let got = interp::run(&m, &[interp_tensor(&inputs[0]), interp_tensor(&inputs[1])])
        .unwrap()
        .remove(0)
        .to_f64_vec();
    let want: Vec<f64> = [&upd[..16], &data[16..32], &upd[16..], &data[48..]]
        .concat()
        .iter()
        .map(|&v| v as f64)
        .collect();
    assert_eq!(got, want);
    for target in ["edge", "datacenter"] {
        matches_interpreter(src, &inputs, target);
    }
}

#[test]
fn scatter_nd_with_indices_known_only_at_run_time_is_refused_with_the_reason() {
    let src = r#"module {
  func.func @main(%d: tensor<4x3xf32> {graph.name = "d"}, %i: tensor<2x1xi64> {graph.name = "i"}, %u: tensor<2x3xf32> {graph.name = "u"}) -> (tensor<4x3xf32> {graph.name = "y"}) {
    %y = "graph.scatter_nd"(%d, %i, %u) : (tensor<4x3xf32>, tensor<2x1xi64>, tensor<2x3xf32>) -> tensor<4x3xf32> loc("ScatterND")
    func.return %y : tensor<4x3xf32>
  }
}
"#;
    let mut m = parse_module(src).unwrap();
    let o = llmpu_compiler::backend::Options {
        target: llmpu_isa::target::Target::preset("edge").unwrap(),
        precision: Precision::Fp32,
    };
    let Err(e) =
        llmpu_compiler::backend::compile(&mut m, &o, Default::default(), &mut std::io::sink())
    else {
        panic!("a ScatterND with run-time indices compiled");
    };
    assert!(
        e.contains("ScatterND") && e.contains("computed at run time"),
        "{e}"
    );
}

#[test]
fn tile_with_constant_repeats_matches_the_interpreter() {
    let src = r#"module {
  func.func @main(%x: tensor<2x3xf32> {graph.name = "x"}) -> (tensor<4x9xf32> {graph.name = "y"}) {
    %r = "graph.constant"() {value = dense<[2, 3]> : tensor<2xi64>} : () -> tensor<2xi64> loc("repeats")
    %y = "graph.tile"(%x, %r) : (tensor<2x3xf32>, tensor<2xi64>) -> tensor<4x9xf32> loc("Tile")
    func.return %y : tensor<4x9xf32>
  }
}
"#;
    let inputs = [Input {
        name: "x",
        dt: DType::F32,
        shape: vec![2, 3],
        vals: vec![1., 2., 3., 4., 5., 6.],
    }];
    let m = parse_module(src).unwrap();
    let got = interp::run(&m, &[interp_tensor(&inputs[0])])
        .unwrap()
        .remove(0)
        .to_f64_vec();
    assert_eq!(&got[..9], [1., 2., 3., 1., 2., 3., 1., 2., 3.]);
    assert_eq!(&got[27..], [4., 5., 6., 4., 5., 6., 4., 5., 6.]);
    for target in ["edge", "datacenter"] {
        matches_interpreter(src, &inputs, target);
    }
}

fn top_k_src(shape: &[u64], k: u64, axis: i64, largest: u8) -> String {
    let t = tensor_type(shape);
    let mut out = shape.to_vec();
    let a = if axis < 0 {
        axis + shape.len() as i64
    } else {
        axis
    } as usize;
    out[a] = k;
    let (v, i) = (tensor_type(&out), tensor_type(&out).replace("f32", "i64"));
    format!(
        r#"module {{
  func.func @main(%x: {t} {{graph.name = "x"}}) -> ({v} {{graph.name = "y"}}, {i} {{graph.name = "i"}}) {{
    %k = "graph.constant"() {{value = dense<[{k}]> : tensor<1xi64>}} : () -> tensor<1xi64> loc("k")
    %y, %j = "graph.top_k"(%x, %k) {{axis = {axis} : i64, largest = {largest} : i64, sorted = 1 : i64}} : ({t}, tensor<1xi64>) -> ({v}, {i}) loc("TopK")
    func.return %y, %j : {v}, {i}
  }}
}}
"#
    )
}

#[test]
fn top_k_orders_equal_values_by_index_and_matches_on_the_emulator() {
    // Ties (2.0 three times, -1.0 twice) must come out lowest index first, as ONNX orders them.
    let x = vec![
        2.0, -1.0, 5.0, 2.0, -1.0, 2.0, 0.5, 7.0, 7.0, -3.0, 0.0, 1.0,
    ];
    let m = parse_module(&top_k_src(&[2, 6], 4, -1, 1)).unwrap();
    let ins = [interp::Tensor::new(vec![2, 6], x.clone())];
    let out = interp::run(&m, &ins).unwrap();
    assert_eq!(out[0].to_f64_vec(), [5., 2., 2., 2., 7., 7., 1., 0.5]);
    assert_eq!(out[1].to_f64_vec(), [2., 0., 3., 5., 1., 2., 5., 0.]);
    for (shape, k, axis, largest) in [
        (vec![2u64, 6], 4u64, -1i64, 1u8),
        (vec![2, 6], 3, -1, 0),
        (vec![4, 3], 2, 0, 1),
    ] {
        let src = top_k_src(&shape, k, axis, largest);
        let inputs = [Input {
            name: "x",
            dt: DType::F32,
            shape: shape.clone(),
            vals: x.clone(),
        }];
        for target in ["edge", "datacenter"] {
            let prog = compile_text(&src, target, Precision::Fp32);
            let t = Tensor::from_f32(DType::F32, shape.clone(), &x).unwrap();
            let res = run(&prog, &[("x".to_string(), t)], &checked()).unwrap();
            let m = parse_module(&src).unwrap();
            let want = interp::run(&m, &[interp_tensor(&inputs[0])]).unwrap();
            for (name, w) in ["y", "i"].iter().zip(&want) {
                let got: Vec<f64> = res
                    .output(name)
                    .unwrap()
                    .to_f32()
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                assert_eq!(
                    got,
                    w.to_f64_vec(),
                    "{target} {shape:?} k {k} axis {axis} largest {largest}: {name}"
                );
            }
        }
    }
}

#[test]
fn one_hot_with_negative_indices_matches_the_interpreter() {
    let src = r#"module {
  func.func @main(%i: tensor<2x3xi64> {graph.name = "i"}) -> (tensor<2x4x3xf32> {graph.name = "y"}) {
    %d = "graph.constant"() {value = dense<4> : tensor<i64>} : () -> tensor<i64> loc("depth")
    %v = "graph.constant"() {value = dense<[-1.0, 3.0]> : tensor<2xf32>} : () -> tensor<2xf32> loc("values")
    %y = "graph.one_hot"(%i, %d, %v) {axis = 1 : i64} : (tensor<2x3xi64>, tensor<i64>, tensor<2xf32>) -> tensor<2x4x3xf32> loc("OneHot")
    func.return %y : tensor<2x4x3xf32>
  }
}
"#;
    let inputs = [Input {
        name: "i",
        dt: DType::I64,
        shape: vec![2, 3],
        vals: vec![0., 3., -1., 2., -4., 1.],
    }];
    let m = parse_module(src).unwrap();
    let got = interp::run(&m, &[interp_tensor(&inputs[0])])
        .unwrap()
        .remove(0)
        .to_f64_vec();
    // Row 0, depth slot 3 (axis 1): indices 3 and -1 (= 3) are hot at columns 1 and 2.
    assert_eq!(&got[9..12], [-1., 3., 3.]);
    for target in ["edge", "datacenter"] {
        matches_interpreter(src, &inputs, target);
    }
}

#[test]
fn gather_indices_out_of_range_trap_instead_of_reading_another_row() {
    // ONNX leaves them undefined and onnxruntime refuses them; a wrong row would be a silent
    // wrong answer. Gather (computed indices), GatherND (a component past its dim while the flat
    // row is inside the table) and GatherElements all trap at the gather's table limit.
    let cases = [
        (
            r#"module {
  func.func @main(%d: tensor<4x3xf32> {graph.name = "d"}, %i: tensor<2xi64> {graph.name = "i"}) -> (tensor<2x3xf32> {graph.name = "y"}) {
    %j = "graph.add"(%i, %i) : (tensor<2xi64>, tensor<2xi64>) -> tensor<2xi64> loc("Add")
    %y = "graph.gather"(%d, %j) {axis = 0 : i64} : (tensor<4x3xf32>, tensor<2xi64>) -> tensor<2x3xf32> loc("Gather")
    func.return %y : tensor<2x3xf32>
  }
}
"#,
            vec![2u64],
            vec![1.0f32, 2.0],
        ),
        (
            r#"module {
  func.func @main(%d: tensor<4x3xf32> {graph.name = "d"}, %i: tensor<1x2xi64> {graph.name = "i"}) -> (tensor<1xf32> {graph.name = "y"}) {
    %y = "graph.gather_nd"(%d, %i) : (tensor<4x3xf32>, tensor<1x2xi64>) -> tensor<1xf32> loc("GatherND")
    func.return %y : tensor<1xf32>
  }
}
"#,
            vec![1, 2],
            vec![0.0, 4.0],
        ),
        (
            r#"module {
  func.func @main(%d: tensor<4x3xf32> {graph.name = "d"}, %i: tensor<4x1xi64> {graph.name = "i"}) -> (tensor<4x1xf32> {graph.name = "y"}) {
    %y = "graph.gather_elements"(%d, %i) {axis = 1 : i64} : (tensor<4x3xf32>, tensor<4x1xi64>) -> tensor<4x1xf32> loc("GatherElements")
    func.return %y : tensor<4x1xf32>
  }
}
"#,
            vec![4, 1],
            vec![0.0, 1.0, -4.0, 2.0],
        ),
    ];
    for (src, ishape, idx) in cases {
        for target in ["edge", "datacenter"] {
            let prog = compile_text(src, target, Precision::Fp32);
            let ins = [
                (
                    "d".to_string(),
                    Tensor::from_f32(DType::F32, vec![4, 3], &values(12, 1)).unwrap(),
                ),
                (
                    "i".to_string(),
                    Tensor::from_f32(DType::I64, ishape.clone(), &idx).unwrap(),
                ),
            ];
            let e = match run(&prog, &ins, &checked()) {
                Ok(_) => panic!("{target}: an out-of-range index ran:\n{src}"),
                Err(e) => e.to_string(),
            };
            assert!(e.contains("outside the table's rows"), "{target}: {e}");
        }
    }
}

#[test]
fn trilu_with_k_given_at_run_time_matches_the_interpreter() {
    for upper in [0, 1] {
        for k in [-2i64, 0, 1, 3] {
            let src = format!(
                r#"module {{
  func.func @main(%x: tensor<2x4x5xf32> {{graph.name = "x"}}, %k: tensor<i64> {{graph.name = "k"}}) -> (tensor<2x4x5xf32> {{graph.name = "y"}}) {{
    %y = "graph.trilu"(%x, %k) {{upper = {upper} : i64}} : (tensor<2x4x5xf32>, tensor<i64>) -> tensor<2x4x5xf32> loc("Trilu")
    func.return %y : tensor<2x4x5xf32>
  }}
}}
"#
            );
            let inputs = [
                Input {
                    name: "x",
                    dt: DType::F32,
                    shape: vec![2, 4, 5],
                    vals: values(40, 5),
                },
                Input {
                    name: "k",
                    dt: DType::I64,
                    shape: vec![],
                    vals: vec![k as f32],
                },
            ];
            for target in ["edge", "datacenter"] {
                matches_interpreter(&src, &inputs, target);
            }
        }
    }
}

#[test]
fn quantize_rounds_half_to_even_before_adding_the_zero_point_and_saturates() {
    let src = r#"module {
  func.func @main(%x: tensor<2x5xf32> {graph.name = "x"}) -> (tensor<2x5xui8> {graph.name = "y"}) {
    %s = "graph.constant"() {value = dense<[1.0, 0.5]> : tensor<2xf32>} : () -> tensor<2xf32> loc("scale")
    %z = "graph.constant"() {value = dense<[1, 3]> : tensor<2xui8>} : () -> tensor<2xui8> loc("zp")
    %y = "graph.quantize_linear"(%x, %s, %z) {axis = 0 : i64} : (tensor<2x5xf32>, tensor<2xf32>, tensor<2xui8>) -> tensor<2x5xui8> loc("Q")
    func.return %y : tensor<2x5xui8>
  }
}
"#;
    let x = Input {
        name: "x",
        dt: DType::F32,
        shape: vec![2, 5],
        vals: vec![0.5, 1.5, 2.5, -1.5, 300.0, 0.25, 0.75, -0.75, -2.0, 200.0],
    };
    for target in ["edge", "datacenter"] {
        matches_interpreter(src, std::slice::from_ref(&x), target);
    }
    let prog = compile_text(src, "edge", Precision::Fp32);
    let rt = [(
        "x".to_string(),
        Tensor::from_f32(DType::F32, vec![2, 5], &x.vals).unwrap(),
    )];
    let res = run(&prog, &rt, &checked()).unwrap();
    // Row 0 (scale 1, zp 1): round(0.5) = 0, round(1.5) = 2, round(2.5) = 2, round(-1.5) = -2
    // then + 1, saturated; row 1 (scale 0.5, zp 3): 0.5, 1.5, -1.5, -4, 400 rounded, + 3.
    assert_eq!(
        res.output("y").unwrap().to_f32(),
        [1.0, 3.0, 3.0, 0.0, 255.0, 3.0, 5.0, 1.0, 0.0, 255.0]
    );
}

#[test]
fn blocked_dequantize_matches_the_interpreter() {
    let src = r#"module {
  func.func @main(%x: tensor<2x6xi8> {graph.name = "x"}) -> (tensor<2x6xf32> {graph.name = "y"}) {
    %s = "graph.constant"() {value = dense<[[0.5, 2.0, 0.25], [1.0, 3.0, -1.0]]> : tensor<2x3xf32>} : () -> tensor<2x3xf32> loc("scale")
    %z = "graph.constant"() {value = dense<[[1, -2, 0], [4, 0, -8]]> : tensor<2x3xi8>} : () -> tensor<2x3xi8> loc("zp")
    %y = "graph.dequantize_linear"(%x, %s, %z) {axis = 1 : i64, block_size = 2 : i64} : (tensor<2x6xi8>, tensor<2x3xf32>, tensor<2x3xi8>) -> tensor<2x6xf32> loc("DQ")
    func.return %y : tensor<2x6xf32>
  }
}
"#;
    let x = Input {
        name: "x",
        dt: DType::I8,
        shape: vec![2, 6],
        vals: vec![
            -128.0, 127.0, 5.0, -7.0, 0.0, 33.0, 12.0, -1.0, 100.0, -100.0, 64.0, 8.0,
        ],
    };
    for target in ["edge", "datacenter"] {
        matches_interpreter(src, std::slice::from_ref(&x), target);
    }
}

fn tensor_type(shape: &[u64]) -> String {
    if shape.is_empty() {
        return "tensor<f32>".into();
    }
    let d: Vec<String> = shape.iter().map(u64::to_string).collect();
    format!("tensor<{}xf32>", d.join("x"))
}

/// An equation, its operands' shapes and its result's shape.
type EinsumCase<'a> = (&'a str, &'a [&'a [u64]], &'a [u64]);

#[test]
fn einsum_equations_match_the_interpreter() {
    let cases: [EinsumCase; 8] = [
        (
            "bhqd,bhkd->bhqk",
            &[&[2, 3, 4, 5], &[2, 3, 6, 5]],
            &[2, 3, 4, 6],
        ),
        ("ij,jk", &[&[3, 4], &[4, 2]], &[3, 2]),
        ("i,j->ij", &[&[3], &[4]], &[3, 4]),
        ("...ij,...jk->...ik", &[&[2, 3, 4], &[2, 4, 5]], &[2, 3, 5]),
        ("iij->j", &[&[3, 3, 4]], &[4]),
        ("bij,bkj->bkj", &[&[2, 3, 4], &[2, 5, 4]], &[2, 5, 4]),
        ("ijk->kji", &[&[2, 3, 4]], &[4, 3, 2]),
        ("ij,ij->", &[&[3, 4], &[3, 4]], &[]),
    ];
    for (eq, shapes, out) in cases {
        let names = ["a", "b"];
        let args: Vec<String> = shapes
            .iter()
            .zip(names)
            .map(|(s, n)| format!("%{n}: {} {{graph.name = \"{n}\"}}", tensor_type(s)))
            .collect();
        let operands: Vec<String> = names[..shapes.len()]
            .iter()
            .map(|n| format!("%{n}"))
            .collect();
        let types: Vec<String> = shapes.iter().map(|s| tensor_type(s)).collect();
        let ot = tensor_type(out);
        let src = format!(
            r#"module {{
  func.func @main({}) -> ({ot} {{graph.name = "y"}}) {{
    %y = "graph.einsum"({}) {{equation = "{eq}"}} : ({}) -> {ot} loc("Einsum")
    func.return %y : {ot}
  }}
}}
"#,
            args.join(", "),
            operands.join(", "),
            types.join(", ")
        );
        let inputs: Vec<Input> = shapes
            .iter()
            .zip(names)
            .enumerate()
            .map(|(i, (s, n))| Input {
                name: n,
                dt: DType::F32,
                shape: s.to_vec(),
                vals: values(s.iter().product::<u64>() as usize, 20 + i as u64),
            })
            .collect();
        for target in ["edge", "datacenter"] {
            matches_interpreter(&src, &inputs, target);
        }
    }
}

#[test]
fn quantize_to_16_bits_is_exact_in_a_bf16_compile() {
    let src = r#"module {
  func.func @main(%x: tensor<6xf32> {graph.name = "x"}) -> (tensor<6xi16> {graph.name = "y"}) {
    %s = "graph.constant"() {value = dense<0.5> : tensor<f32>} : () -> tensor<f32> loc("scale")
    %z = "graph.constant"() {value = dense<-3> : tensor<i16>} : () -> tensor<i16> loc("zp")
    %y = "graph.quantize_linear"(%x, %s, %z) : (tensor<6xf32>, tensor<f32>, tensor<i16>) -> tensor<6xi16> loc("Q")
    func.return %y : tensor<6xi16>
  }
}
"#;
    let vals = [16383.25f32, -16000.75, 1234.5, 0.25, 20000.0, -20000.0];
    let prog = compile_text(src, "edge", Precision::Bf16);
    let rt = [(
        "x".to_string(),
        Tensor::from_f32(DType::F32, vec![6], &vals).unwrap(),
    )];
    let res = run(&prog, &rt, &checked()).unwrap();
    // round(x / 0.5) − 3, saturated to i16: the steps stay f32 although the compile is bf16.
    assert_eq!(
        res.output("y").unwrap().to_f32(),
        [32763.0, -32005.0, 2466.0, -3.0, 32767.0, -32768.0]
    );
}
