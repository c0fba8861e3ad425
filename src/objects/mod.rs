//! Working with kfaas objects as a whole: the CRDs they define, parsing them from YAML, and
//! validating them exactly as the API server would.

mod crds;
mod parse;
mod validate;

pub use crds::{crd_file_name, crd_yaml, crds, crds_yaml};
pub use parse::{KfaasObject, ParseError, ParsedDocument, parse_documents};
pub use validate::{ValidationError, validate};
