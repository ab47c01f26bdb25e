//! `builtin.module`, `func.func` and `func.return`: the containers every IR file uses.
//!
//! They print in MLIR's custom syntax (`module { ... }`, `func.func @f(%arg0: T) -> T { ... }`,
//! `func.return %0 : T`) so real `mlir-opt` verifies them too.

use super::{OpView, define_ops};
use crate::ir::{Attribute, BlockId, Location, Module, OpId, OpSpec, Type};

define_ops! { OPS;
    /// `module { ... }` — the top-level container; one region with one block of functions.
    ModuleOp = "builtin.module", pure = false, verify = verify_module;
    /// `func.func @name(%arg0: T, ...) -> (R, ...) { ... }` — a function. Attributes: `sym_name`,
    /// `function_type`, optional `arg_attrs`/`res_attrs` (arrays of dictionaries, e.g. ONNX I/O names).
    /// The entry block's arguments are the parameters; the body ends with `func.return`. A body of
    /// several blocks (`^bb1:` ...) ends every block with `func.return` or an op with successors.
    FuncOp = "func.func", pure = false, verify = verify_func;
    /// `func.return %0, %1 : T0, T1` — returns from the enclosing function; operand types must match the
    /// function's result types.
    ReturnOp = "func.return", pure = false, verify = verify_return;
}

fn verify_module(v: &OpView) -> Result<(), String> {
    v.operands_in(0, 0)?;
    v.results_in(0, 0)?;
    let d = v.data();
    if d.regions.len() != 1 || v.m.region(d.regions[0]).blocks.len() != 1 {
        return Err("expects one region with one block".into());
    }
    Ok(())
}

fn verify_func(v: &OpView) -> Result<(), String> {
    v.operands_in(0, 0)?;
    v.results_in(0, 0)?;
    v.str_attr("sym_name")?;
    let Some(Attribute::Type(Type::Function(ins, _))) = v.attr("function_type") else {
        return Err("requires a 'function_type' attribute holding a function type".into());
    };
    let d = v.data();
    if d.regions.len() != 1 {
        return Err("expects one region".into());
    }
    let Some(entry) = v.m.entry_block(v.id) else {
        return Err("expects a body (entry block)".into());
    };
    let args = &v.m.block(entry).args;
    if args.len() != ins.len() {
        return Err(format!(
            "entry block has {} arguments but the function type has {} inputs",
            args.len(),
            ins.len()
        ));
    }
    for (i, (a, t)) in args.iter().zip(ins).enumerate() {
        if v.m.value_type(*a) != t {
            return Err(format!(
                "type of entry block argument #{i} ({}) does not match the function type ({t})",
                v.m.value_type(*a)
            ));
        }
    }
    let blocks = &v.m.region(d.regions[0]).blocks;
    if blocks.len() == 1 {
        return match v.m.block(entry).ops.last() {
            Some(&last) if v.m.op(last).name == ReturnOp::NAME => Ok(()),
            _ => Err("body must end with 'func.return'".into()),
        };
    }
    // A body of several blocks: control leaves each block explicitly.
    for (i, &b) in blocks.iter().enumerate() {
        let ends = v.m.block(b).ops.last().is_some_and(|&last| {
            let o = v.m.op(last);
            o.name == ReturnOp::NAME || !o.successors.is_empty()
        });
        if !ends {
            return Err(format!(
                "block ^bb{i} of the body must end with 'func.return' or an op with successors"
            ));
        }
    }
    Ok(())
}

fn verify_return(v: &OpView) -> Result<(), String> {
    v.results_in(0, 0)?;
    let Some(parent) =
        v.m.parent_op(v.id)
            .filter(|&p| v.m.op(p).name == "func.func")
    else {
        return Err("expects parent op 'func.func'".into());
    };
    let Some(Attribute::Type(Type::Function(_, outs))) = v.m.attr(parent, "function_type") else {
        return Ok(());
    };
    if outs.len() != v.num_operands() {
        return Err(format!(
            "has {} operands, but enclosing function returns {}",
            v.num_operands(),
            outs.len()
        ));
    }
    for (i, t) in outs.iter().enumerate() {
        if v.operand_type(i) != t {
            return Err(format!(
                "type of return operand #{i} ({}) doesn't match function result type ({t})",
                v.operand_type(i)
            ));
        }
    }
    Ok(())
}

/// Creates `func.func @name` with the given signature in the module body; returns the op and its
/// entry block (whose arguments are the parameters).
pub fn build_func(
    m: &mut Module,
    name: &str,
    inputs: Vec<Type>,
    results: Vec<Type>,
    loc: Location,
) -> (OpId, BlockId) {
    let body = m.body();
    let op = m.append(
        body,
        OpSpec::new(FuncOp::NAME, loc)
            .attr("sym_name", Attribute::str(name))
            .attr(
                "function_type",
                Attribute::Type(Type::Function(inputs.clone(), results)),
            ),
    );
    let r = m.add_region(op);
    let entry = m.add_block(r, &inputs);
    (op, entry)
}

/// Appends `func.return` with the given values to `block`.
pub fn build_return(
    m: &mut Module,
    block: BlockId,
    values: &[crate::ir::ValueId],
    loc: Location,
) -> OpId {
    m.append(block, OpSpec::new(ReturnOp::NAME, loc).operands(values))
}
