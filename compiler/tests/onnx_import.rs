//! The ONNX importer on small models built here with the importer's own `prost` messages: golden
//! diagnostics (unsupported ops listed at once, external-data escapes, truncated files, cycles, dangling
//! names, unbound dims, inconsistent shapes), external data that works, symbolic dims, the
//! interpreter giving the same answer on the raw import and after the import pipeline, and `If`
//! (the taken branch inlined when the condition folds or comes from a bound input, both
//! branches selected by `where` on a run-time condition).

use std::path::{Path, PathBuf};

use llmpu_compiler::interp::{self, Tensor};
use llmpu_compiler::ir::print_module;
use llmpu_compiler::onnx::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor,
    ValueInfoProto, attribute_type, data_location, data_type,
};
use llmpu_compiler::onnx::{
    ImportError, ImportOptions, import_bytes, import_file, import_model, import_pipeline,
};
use llmpu_compiler::parser::parse_module;
use llmpu_compiler::pass::{PassManager, PassManagerOptions};
use prost::Message;

enum D {
    N(i64),
    P(&'static str),
}

fn vi(name: &str, elem: i32, dims: &[D]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: elem,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| match d {
                            D::N(v) => Dimension {
                                dim_value: Some(*v),
                                ..Default::default()
                            },
                            D::P(p) => Dimension {
                                dim_param: Some(p.to_string()),
                                ..Default::default()
                            },
                        })
                        .collect(),
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn f32_init(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        float_data: v.to_vec(),
        ..Default::default()
    }
}

fn model(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
) -> ModelProto {
    ModelProto {
        ir_version: 9,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 21,
        }],
        producer_name: "llmpu-tests".into(),
        graph: Some(GraphProto {
            name: "g".into(),
            node: nodes,
            input: inputs,
            output: outputs,
            initializer: inits,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn err_of(m: &ModelProto, opts: &ImportOptions) -> ImportError {
    match import_model(m, None, opts) {
        Ok(_) => panic!("import unexpectedly succeeded"),
        Err(e) => e,
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("llmpu-onnx-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// `y = x + w` with `w` in external data at `location`.
fn external_model(location: &str, offset: Option<u64>, length: Option<u64>) -> ModelProto {
    let mut ext = vec![StringStringEntryProto {
        key: "location".into(),
        value: location.into(),
    }];
    if let Some(o) = offset {
        ext.push(StringStringEntryProto {
            key: "offset".into(),
            value: o.to_string(),
        });
    }
    if let Some(l) = length {
        ext.push(StringStringEntryProto {
            key: "length".into(),
            value: l.to_string(),
        });
    }
    let w = TensorProto {
        name: "w".into(),
        dims: vec![4],
        data_type: data_type::FLOAT,
        data_location: data_location::EXTERNAL,
        external_data: ext,
        ..Default::default()
    };
    model(
        vec![node("Add", "add0", &["x", "w"], &["y"])],
        vec![vi("x", data_type::FLOAT, &[D::N(4)])],
        vec![vi("y", data_type::FLOAT, &[D::N(4)])],
        vec![w],
    )
}

fn write_model(dir: &Path, m: &ModelProto) -> PathBuf {
    let p = dir.join("model.onnx");
    std::fs::write(&p, m.encode_to_vec()).expect("write model");
    p
}

fn weights() -> Vec<u8> {
    let mut b = vec![0u8; 8]; // padding: the tensor starts at offset 8
    for v in [1.0f32, 2.0, 3.0, 4.0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

#[test]
fn unsupported_ops_are_listed_all_at_once() {
    let mut loop_node = node("Loop", "loop_0", &["n", "c"], &["o1"]);
    loop_node.attribute.push(AttributeProto {
        name: "body".into(),
        r#type: attribute_type::GRAPH,
        g: Some(Box::default()),
        ..Default::default()
    });
    let mut ms = node("FusedMatMul", "fused_0", &["x", "x"], &["o2"]);
    ms.domain = "com.microsoft".into();
    let m = model(
        vec![
            node("Relu", "relu_ok", &["x"], &["r"]),
            loop_node,
            node("Resize", "resize_0", &["r"], &["o3"]),
            ms,
            node("SequenceConstruct", "", &["x"], &["seq"]),
        ],
        vec![vi("x", data_type::FLOAT, &[D::N(2)])],
        vec![vi("o3", data_type::FLOAT, &[D::N(2)])],
        vec![],
    );
    insta::assert_snapshot!(err_of(&m, &ImportOptions::default()).to_string(), @r"
    4 unsupported node(s):
      node 'loop_0' (Loop): control flow with loops (subgraphs run repeatedly) is not supported
      node 'resize_0' (Resize): operator is not supported
      node 'fused_0' (FusedMatMul): operator domain 'com.microsoft' is not supported
      node 'seq' (SequenceConstruct): Sequence/Optional values are not supported
    ");
}

/// `y = If(cond) { x + 1 } else { x · 2 }` (each branch reads the outer `x` and has its own
/// initializer); `cond_nodes` compute `cond`, `extra` are more graph inputs.
fn if_model(cond_nodes: Vec<NodeProto>, extra: Vec<ValueInfoProto>, then_op: &str) -> ModelProto {
    let branch = |op: &str, c: &str, v: f32, out: &str| GraphProto {
        name: out.into(),
        node: vec![node(op, &format!("{out}_op"), &["x", c], &[out])],
        initializer: vec![f32_init(c, &[], &[v])],
        output: vec![vi(out, data_type::FLOAT, &[D::N(2), D::N(3)])],
        ..Default::default()
    };
    let mut n = node("If", "if_0", &["cond"], &["y"]);
    for (name, g) in [
        ("then_branch", branch(then_op, "one", 1.0, "t_out")),
        ("else_branch", branch("Mul", "two", 2.0, "e_out")),
    ] {
        n.attribute.push(AttributeProto {
            name: name.into(),
            r#type: attribute_type::GRAPH,
            g: Some(Box::new(g)),
            ..Default::default()
        });
    }
    let mut nodes = cond_nodes;
    nodes.push(n);
    let mut inputs = vec![vi("x", data_type::FLOAT, &[D::N(2), D::N(3)])];
    inputs.extend(extra);
    model(
        nodes,
        inputs,
        vec![vi("y", data_type::FLOAT, &[D::N(2), D::N(3)])],
        vec![],
    )
}

fn run_y(m: &ModelProto, opts: &ImportOptions) -> Vec<f64> {
    let mut module = import_model(m, None, opts).unwrap_or_else(|e| panic!("{e}"));
    let mut pm =
        PassManager::from_names(&import_pipeline(), PassManagerOptions::default()).unwrap();
    pm.run(&mut module, &mut std::io::sink()).unwrap();
    let text = print_module(&module);
    assert!(!text.contains("If"), "the If is inlined:\n{text}");
    let x = Tensor::new(vec![2, 3], vec![1f32, 2.0, 3.0, 4.0, 5.0, 6.0]);
    interp::run(&module, &[x]).unwrap()[0].to_f64_vec()
}

#[test]
fn an_if_whose_condition_folds_imports_the_taken_branch() {
    // cond = (Size(x) == 6): true once x's shape is static.
    let size6 = TensorProto {
        name: "six".into(),
        data_type: data_type::INT64,
        int64_data: vec![6],
        ..Default::default()
    };
    let mut m = if_model(
        vec![
            node("Size", "size", &["x"], &["n"]),
            node("Equal", "eq", &["n", "six"], &["cond"]),
        ],
        vec![],
        "Add",
    );
    m.graph.as_mut().unwrap().initializer.push(size6);
    assert_eq!(
        run_y(&m, &ImportOptions::default()),
        [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    );
}

#[test]
fn an_if_on_a_run_time_input_selects_between_both_branches_or_is_bound() {
    let m = if_model(
        vec![node("Identity", "id", &["flag"], &["cond"])],
        vec![vi("flag", data_type::BOOL, &[D::N(1)])],
        "Add",
    );
    let x = Tensor::new(vec![2, 3], vec![1f32, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let mut module = import_model(&m, None, &ImportOptions::default()).unwrap();
    let mut pm =
        PassManager::from_names(&import_pipeline(), PassManagerOptions::default()).unwrap();
    pm.run(&mut module, &mut std::io::sink()).unwrap();
    for (flag, want) in [
        (true, [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]),
        (false, [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]),
    ] {
        let f = Tensor::new(vec![1], vec![flag]);
        let y = interp::run(&module, &[x.clone(), f]).unwrap()[0].to_f64_vec();
        assert_eq!(y, want, "flag {flag}");
    }
    // Bound, only the taken branch is imported.
    let mut opts = ImportOptions::default();
    opts.bindings
        .insert("flag".into(), Tensor::new(vec![1], vec![false]));
    assert_eq!(run_y(&m, &opts), [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
}

#[test]
fn a_run_time_if_whose_branches_differ_in_type_names_the_input_to_bind() {
    let mut m = if_model(
        vec![node("Identity", "id", &["flag"], &["cond"])],
        vec![vi("flag", data_type::BOOL, &[D::N(1)])],
        "Add",
    );
    // The else branch returns a [3] slice of its own.
    let g = m.graph.as_mut().unwrap();
    let ifn = g.node.iter_mut().find(|n| n.op_type == "If").unwrap();
    let other = ifn
        .attribute
        .iter_mut()
        .find(|a| a.name == "else_branch")
        .unwrap();
    let eb = other.g.as_mut().unwrap();
    eb.node = vec![node("ReduceSum", "e_sum", &["x"], &["e_out"])];
    eb.node[0].attribute.push(AttributeProto {
        name: "keepdims".into(),
        r#type: attribute_type::INT,
        i: 0,
        ..Default::default()
    });
    eb.initializer.clear();
    eb.output = vec![vi("e_out", data_type::FLOAT, &[])];
    let e = err_of(&m, &ImportOptions::default()).to_string();
    assert!(
        e.contains("graph input 'flag'")
            && e.contains("differ in type")
            && e.contains("--bind flag=1"),
        "{e}"
    );
}

#[test]
fn unsupported_ops_inside_if_branches_are_listed_with_their_branch() {
    let m = if_model(
        vec![node("Identity", "id", &["x"], &["cond"])],
        vec![],
        "Resize",
    );
    insta::assert_snapshot!(err_of(&m, &ImportOptions::default()).to_string(), @r"
    1 unsupported node(s):
      node 'if_0/then_branch/t_out_op' (Resize): operator is not supported
    ");
}

#[test]
fn exotic_element_types_are_rejected_with_a_reason() {
    let m = model(
        vec![node("Identity", "id", &["x"], &["y"])],
        vec![vi("x", data_type::INT4, &[D::N(2)])],
        vec![vi("y", data_type::INT4, &[D::N(2)])],
        vec![],
    );
    insta::assert_snapshot!(err_of(&m, &ImportOptions::default()).to_string(), @"graph input 'x': element type INT4 is not supported (sub-byte types are not supported)");
}

#[test]
fn truncated_and_garbage_files_are_decode_errors() {
    let m = external_model("w.bin", None, None);
    let bytes = m.encode_to_vec();
    let e = import_bytes(&bytes[..bytes.len() / 2], None, &ImportOptions::default())
        .expect_err("truncated file must fail");
    assert!(matches!(e, ImportError::Decode { .. }), "{e}");
    insta::assert_snapshot!(e.to_string(), @"malformed ONNX protobuf: failed to decode Protobuf message: ModelProto.graph: buffer underflow");
    let e = import_bytes(
        b"\xff\xff\xff\xff not a model",
        None,
        &ImportOptions::default(),
    )
    .expect_err("garbage must fail");
    assert!(matches!(e, ImportError::Decode { .. }), "{e}");
}

#[test]
fn external_data_is_memory_mapped_from_the_model_folder() {
    let dir = scratch("ext-ok");
    std::fs::write(dir.join("w.bin"), weights()).expect("write weights");
    let p = write_model(&dir, &external_model("w.bin", Some(8), Some(16)));
    let m = import_file(&p, &ImportOptions::default()).expect("import");
    let out = interp::run(&m, &[Tensor::new(vec![4], vec![10f32, 20.0, 30.0, 40.0])]).expect("run");
    assert_eq!(out[0].to_f64_vec(), vec![11.0, 22.0, 33.0, 44.0]);
}

#[test]
fn external_data_escaping_the_model_folder_is_refused() {
    let dir = scratch("ext-escape");
    let inner = dir.join("model");
    std::fs::create_dir_all(&inner).expect("mkdir");
    std::fs::write(dir.join("secret.bin"), weights()).expect("write");
    let err = |loc: &str| {
        let p = write_model(&inner, &external_model(loc, Some(8), Some(16)));
        import_file(&p, &ImportOptions::default())
            .expect_err("escape must fail")
            .to_string()
    };
    insta::assert_snapshot!(err("../secret.bin"), @"tensor 'w': external data location '../secret.bin' escapes the model folder");
    let abs = dir.join("secret.bin").display().to_string();
    assert!(err(&abs).contains("escapes the model folder"));
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.join("secret.bin"), inner.join("link.bin"))
            .expect("symlink");
        insta::assert_snapshot!(err("link.bin"), @"tensor 'w': external data location 'link.bin' escapes the model folder (through a symlink)");
    }
}

#[test]
fn external_data_out_of_bounds_is_refused() {
    let dir = scratch("ext-oob");
    std::fs::write(dir.join("w.bin"), weights()).expect("write weights");
    let p = write_model(&dir, &external_model("w.bin", Some(16), Some(16)));
    let e = import_file(&p, &ImportOptions::default()).expect_err("must fail");
    insta::assert_snapshot!(e.to_string(), @"tensor 'w': external data 'w.bin': offset 16 + length 16 exceeds the file size 24");
    let p = write_model(&dir, &external_model("w.bin", Some(u64::MAX), Some(16)));
    assert!(import_file(&p, &ImportOptions::default()).is_err());
    let p = write_model(&dir, &external_model("w.bin", Some(12), None));
    let e = import_file(&p, &ImportOptions::default()).expect_err("short data");
    assert!(e.to_string().contains("need 16"), "{e}");
}

#[test]
fn cycles_and_dangling_names_are_reported_with_nodes() {
    let m = model(
        vec![
            node("Relu", "a", &["x", "q"], &["p"]),
            node("Relu", "b", &["p"], &["q"]),
        ],
        vec![vi("x", data_type::FLOAT, &[D::N(2)])],
        vec![vi("q", data_type::FLOAT, &[D::N(2)])],
        vec![],
    );
    insta::assert_snapshot!(err_of(&m, &ImportOptions::default()).to_string(), @"the graph has a cycle through node(s) 'a' (Relu), 'b' (Relu)");
    let m = model(
        vec![node("Add", "add0", &["x", "nope"], &["y"])],
        vec![vi("x", data_type::FLOAT, &[D::N(2)])],
        vec![vi("y", data_type::FLOAT, &[D::N(2)])],
        vec![],
    );
    insta::assert_snapshot!(err_of(&m, &ImportOptions::default()).to_string(), @"node 'add0' (Add): input 'nope' is not produced by any node, initializer or graph input");
}

#[test]
fn inconsistent_shapes_name_the_node() {
    let m = model(
        vec![node("MatMul", "mm", &["x", "w"], &["y"])],
        vec![vi("x", data_type::FLOAT, &[D::N(2), D::N(3)])],
        vec![vi("y", data_type::FLOAT, &[D::N(2), D::N(5)])],
        vec![f32_init("w", &[3, 4], &[0.0; 12])],
    );
    insta::assert_snapshot!(err_of(&m, &ImportOptions::default()).to_string(), @"node 'mm' (MatMul): output 'y': inconsistent shapes: inferred tensor<2x4xf32> but the value is declared tensor<2x5xf32>");
    let m = model(
        vec![node("MatMul", "mm", &["x", "w"], &["y"])],
        vec![vi("x", data_type::FLOAT, &[D::N(2), D::N(3)])],
        vec![vi("y", data_type::FLOAT, &[D::N(2), D::N(4)])],
        vec![f32_init("w", &[5, 4], &[0.0; 20])],
    );
    insta::assert_snapshot!(err_of(&m, &ImportOptions::default()).to_string(), @"node 'mm' (MatMul): inner dimensions do not match: 3 vs 5");
}

fn symbolic_model() -> ModelProto {
    let mut sm = node("Softmax", "sm", &["s"], &["y"]);
    sm.attribute.push(AttributeProto {
        name: "axis".into(),
        r#type: attribute_type::INT,
        i: -1,
        ..Default::default()
    });
    model(
        vec![
            node("MatMul", "mm", &["x", "w"], &["h"]),
            node("Shape", "shape", &["h"], &["hs"]),
            node("Reshape", "rs", &["h", "hs"], &["s"]),
            sm,
        ],
        vec![vi("x", data_type::FLOAT, &[D::P("seq"), D::N(3)])],
        vec![vi("y", data_type::FLOAT, &[D::P("seq"), D::N(2)])],
        vec![f32_init("w", &[3, 2], &[0.5, -1.0, 0.25, 2.0, -0.75, 1.5])],
    )
}

#[test]
fn unbound_symbolic_dims_are_errors_or_kept_symbolic() {
    let m = symbolic_model();
    insta::assert_snapshot!(err_of(&m, &ImportOptions::default()).to_string(), @"1 symbolic dim is not bound: 'seq' (input 'x'); give --dim seq=N");
    let opts = ImportOptions {
        allow_symbolic: true,
        ..Default::default()
    };
    let module = import_model(&m, None, &opts).expect("symbolic import");
    let text = print_module(&module);
    assert!(
        text.contains(r#"tensor<?x3xf32, #graph.dims<"seq", 3>> {onnx.name = "x"}"#),
        "{text}"
    );
    let again = parse_module(&text).expect("reparse");
    assert_eq!(print_module(&again), text, "print → parse → print");
}

/// Optimum's decoder spells the mask's length `past_sequence_length + sequence_length`.
fn expression_dim_model() -> ModelProto {
    let mut cat = node("Concat", "cat", &["past", "new"], &["all"]);
    cat.attribute.push(AttributeProto {
        name: "axis".into(),
        r#type: attribute_type::INT,
        i: 0,
        ..Default::default()
    });
    model(
        vec![cat],
        vec![
            vi(
                "past",
                data_type::FLOAT,
                &[D::P("past_sequence_length"), D::N(2)],
            ),
            vi("new", data_type::FLOAT, &[D::P("sequence_length"), D::N(2)]),
        ],
        vec![vi(
            "all",
            data_type::FLOAT,
            &[D::P("past_sequence_length + sequence_length"), D::N(2)],
        )],
        vec![],
    )
}

#[test]
fn an_expression_dim_takes_its_value_from_the_names_it_uses() {
    let m = expression_dim_model();
    let mut opts = ImportOptions::default();
    opts.dims.insert("sequence_length".into(), 1);
    // Unbound: the names the expression uses, not the expression, are what `--dim` binds.
    insta::assert_snapshot!(err_of(&m, &opts).to_string(), @"1 symbolic dim is not bound: 'past_sequence_length' (input 'past'); give --dim past_sequence_length=N");
    opts.dims.insert("past_sequence_length".into(), 0);
    let module = import_model(&m, None, &opts).expect("import with an empty past");
    let text = print_module(&module);
    assert!(text.contains("-> tensor<1x2xf32>"), "{text}");
}

#[test]
fn interpreter_agrees_before_and_after_the_import_pipeline() {
    let m = symbolic_model();
    let mut opts = ImportOptions::default();
    opts.dims.insert("seq".into(), 2);
    opts.fold = false;
    let raw = import_model(&m, None, &opts).expect("import");
    let x = Tensor::new(vec![2, 3], vec![1f32, 2.0, 3.0, -1.0, 0.5, 0.25]);
    let before = interp::run(&raw, std::slice::from_ref(&x)).expect("run raw");
    let mut done = raw.clone();
    let mut pm = PassManager::from_names(&import_pipeline(), PassManagerOptions::default())
        .expect("pipeline");
    pm.run(&mut done, &mut std::io::sink()).expect("passes");
    let text = print_module(&done);
    assert!(
        !text.contains("graph.shape"),
        "shape chain should fold:\n{text}"
    );
    let after = interp::run(&done, &[x]).expect("run folded");
    assert_eq!(before, after);
    let y = after[0].to_f64_vec();
    assert!((y[0] + y[1] - 1.0).abs() < 1e-6 && (y[2] + y[3] - 1.0).abs() < 1e-6);
}

#[test]
fn shape_option_must_match_the_declared_shape() {
    let m = symbolic_model();
    let mut opts = ImportOptions::default();
    opts.shapes.insert("x".into(), vec![4, 7]);
    insta::assert_snapshot!(err_of(&m, &opts).to_string(), @r#"--shape x=4x7 does not match the declared shape tensor<?x3xf32, #graph.dims<"seq", 3>>"#);
}

#[test]
fn softmax_before_opset_13_normalizes_the_flattened_trailing_dims() {
    let mut sm = node("Softmax", "sm", &["x"], &["y"]);
    sm.attribute.push(AttributeProto {
        name: "axis".into(),
        r#type: attribute_type::INT,
        i: 1,
        ..Default::default()
    });
    let mut m = model(
        vec![sm],
        vec![vi("x", data_type::FLOAT, &[D::N(2), D::N(3), D::N(2)])],
        vec![vi("y", data_type::FLOAT, &[D::N(2), D::N(3), D::N(2)])],
        vec![],
    );
    m.opset_import[0].version = 11;
    let module = import_model(&m, None, &ImportOptions::default()).expect("import");
    let x = Tensor::new(
        vec![2, 3, 2],
        (0..12).map(|i| i as f32 * 0.1).collect::<Vec<_>>(),
    );
    let y = interp::run(&module, &[x]).expect("run")[0].to_f64_vec();
    // Opset 11: each batch row's 6 trailing values sum to 1 (opset 13 would normalize pairs).
    assert!((y[..6].iter().sum::<f64>() - 1.0).abs() < 1e-6);
    assert!((y[6..].iter().sum::<f64>() - 1.0).abs() < 1e-6);
    assert!((y[0] + y[1] - 1.0).abs() > 0.1);
}

#[test]
fn tensors_round_trip_through_tensor_proto() {
    use llmpu_compiler::onnx::tensor::ExternalData;
    use llmpu_compiler::onnx::{tensor_from_proto, tensor_to_proto};
    let mut ext = ExternalData::new(None);
    for t in [
        Tensor::new(vec![2, 2], vec![1.5f32, -2.0, 0.0, 7.25]),
        Tensor::new(vec![3], vec![true, false, true]),
        Tensor::new(vec![1], vec![u64::MAX]),
        Tensor::new(
            vec![2],
            vec![half::bf16::from_f32(1.0), half::bf16::from_f32(-3.5)],
        ),
        Tensor::scalar(-5i8),
    ] {
        let p = tensor_to_proto("t", &t);
        assert_eq!(tensor_from_proto(&p, &mut ext).expect("decode"), t);
    }
    // Typed fields: f16 bit patterns travel in int32_data.
    let p = TensorProto {
        dims: vec![2],
        data_type: data_type::FLOAT16,
        int32_data: vec![0x3C00, 0xC000],
        ..Default::default()
    };
    assert_eq!(
        tensor_from_proto(&p, &mut ext).expect("f16").to_f64_vec(),
        vec![1.0, -2.0]
    );
    let bad = TensorProto {
        dims: vec![1_000_000_000, 1_000_000_000],
        data_type: data_type::FLOAT,
        float_data: vec![1.0],
        ..Default::default()
    };
    assert!(tensor_from_proto(&bad, &mut ext).is_err());
}
