//! The IR core: arena-backed [`Module`] with typed handles, types, attributes, locations, the printer and
//! the structural verifier. Dialect-specific knowledge lives in [`crate::dialects`].

pub mod attrs;
pub mod module;
pub mod print;
pub mod types;
pub mod verify;

pub use attrs::{Attribute, Blob, BlobForm, BlobId, BlobTable, DenseAttr, Location};
pub use module::{BlockId, Module, OpData, OpId, OpSpec, RegionId, Span, ValueDef, ValueId};
pub use print::{PrintOptions, print_module, print_module_with};
pub use types::{AddressSpace, BufferType, Dim, ScalarType, TensorType, Type};
pub use verify::{VerifyError, verify};
