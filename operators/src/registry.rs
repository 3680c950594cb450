//! Operators registered by the program that embeds updraft, used from pipelines by name.
//!
//! A factory turns the operator's `params` table into an [`Operator`] for one rank. The usual
//! way is [`Registry::register`] with a parameter type that derives `serde::Deserialize`: the
//! same conversion checks the parameters when a pipeline is validated (an unknown or missing
//! field is reported at `operator.NAME.params`) and builds the operator on every worker.
//!
//! ```
//! use serde::Deserialize;
//! use updraft_operators::registry::{BuildContext, Registry};
//! use updraft_runtime::{Flow, Operator, OperatorError, Output};
//! use arrow_array::RecordBatch;
//!
//! /// Passes every batch through, counting rows.
//! struct Tap { rows: usize }
//!
//! impl Operator for Tap {
//!     fn on_batch(&mut self, _: usize, b: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
//!         self.rows += b.num_rows();
//!         out.emit(b);
//!         Ok(())
//!     }
//!     fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
//!         Ok(Flow::Idle)
//!     }
//! }
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct TapParams { label: String }
//!
//! let mut registry = Registry::new();
//! registry
//!     .register("tap", |_: TapParams, _: &BuildContext| Ok(Box::new(Tap { rows: 0 }) as Box<dyn Operator>))
//!     .expect("a new name");
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use updraft_config::OperatorCatalog;
use updraft_runtime::{Operator, OperatorError};

/// Kinds the pipeline reader handles itself; a registered operator cannot take these names.
pub const BUILTIN_KINDS: &[&str] = &[
    "join",
    "group_by",
    "sort",
    "head",
    "tail",
    "slice",
    "filter",
    "project",
    "union",
    "intersect",
    "subtract",
    "distinct",
    "repartition",
    "shuffle",
];

/// Where an operator instance will run.
#[derive(Debug, Clone, Copy)]
pub struct BuildContext<'a> {
    /// The operator's name in the pipeline.
    pub name: &'a str,
    /// This worker's rank.
    pub rank: u32,
    /// Number of workers.
    pub world: u32,
    /// Preferred rows per output batch.
    pub batch_rows: usize,
    /// Number of inputs (ports `0..inputs`).
    pub inputs: usize,
    /// The worker's memory budget (`runtime.memory_limit`). An operator that keeps data
    /// beyond a batch should hold a [`updraft_runtime::Reservation`] from it
    /// (`memory.reserve(name)`, then `try_grow` before keeping more) and spill or fail with
    /// `OperatorError::ResourcesExhausted` when refused, as the built-in operators do.
    pub memory: &'a Arc<updraft_runtime::MemoryPool>,
}

/// Builds operators of one registered kind.
pub trait OperatorFactory: Send + Sync {
    /// Checks a `params` table before anything runs.
    ///
    /// # Errors
    /// What is wrong with the parameters, in words.
    fn check(&self, params: &toml::Table) -> Result<(), String>;

    /// The operator for one rank.
    ///
    /// # Errors
    /// Parameters it cannot use, or anything else that stops it from starting.
    fn build(&self, params: &toml::Table, ctx: &BuildContext<'_>)
    -> Result<Box<dyn Operator>, OperatorError>;
}

/// Why a name cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The name is a built-in operator kind.
    #[error("`{0}` is a built-in operator kind; register custom operators under another name")]
    Reserved(String),
    /// The name was registered before.
    #[error("an operator named `{0}` is already registered")]
    Duplicate(String),
    /// Names are identifiers: letters, digits and `_`, starting with a letter.
    #[error("`{0}` is not a valid operator name: use letters, digits and `_`, starting with a letter")]
    BadName(String),
}

/// The registered operators of a program.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, Arc<dyn OperatorFactory>>,
    version: Option<String>,
}

struct Typed<P, F> {
    build: F,
    _params: std::marker::PhantomData<fn() -> P>,
}

fn params_of<P: DeserializeOwned>(params: &toml::Table) -> Result<P, String> {
    toml::Value::Table(params.clone()).try_into::<P>().map_err(|e| e.message().trim_end().to_string())
}

impl<P, F> OperatorFactory for Typed<P, F>
where
    P: DeserializeOwned,
    F: Fn(P, &BuildContext<'_>) -> Result<Box<dyn Operator>, OperatorError> + Send + Sync,
{
    fn check(&self, params: &toml::Table) -> Result<(), String> {
        params_of::<P>(params).map(|_| ())
    }

    fn build(
        &self,
        params: &toml::Table,
        ctx: &BuildContext<'_>,
    ) -> Result<Box<dyn Operator>, OperatorError> {
        let p = params_of::<P>(params)
            .map_err(|e| OperatorError::Invalid(format!("`{}`: parameters: {e}", ctx.name)))?;
        (self.build)(p, ctx)
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `kind`, built by `build` from parameters of type `P` (deserialized from the
    /// operator's `params` table; an absent table is an empty one).
    ///
    /// # Errors
    /// Built-in or already registered names, and names that are not identifiers.
    pub fn register<P, F>(&mut self, kind: &str, build: F) -> Result<&mut Registry, RegistryError>
    where
        P: DeserializeOwned + 'static,
        F: Fn(P, &BuildContext<'_>) -> Result<Box<dyn Operator>, OperatorError> + Send + Sync + 'static,
    {
        self.register_factory(kind, Arc::new(Typed { build, _params: std::marker::PhantomData }))
    }

    /// Registers a factory written by hand.
    ///
    /// # Errors
    /// As for [`Registry::register`].
    pub fn register_factory(
        &mut self,
        kind: &str,
        factory: Arc<dyn OperatorFactory>,
    ) -> Result<&mut Registry, RegistryError> {
        let mut chars = kind.chars();
        let identifier = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !identifier {
            return Err(RegistryError::BadName(kind.to_string()));
        }
        if BUILTIN_KINDS.contains(&kind) {
            return Err(RegistryError::Reserved(kind.to_string()));
        }
        if self.factories.contains_key(kind) {
            return Err(RegistryError::Duplicate(kind.to_string()));
        }
        self.factories.insert(kind.to_string(), factory);
        Ok(self)
    }

    /// The factory of `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn OperatorFactory>> {
        self.factories.get(kind)
    }

    /// Names the version of the registered operators (the embedding program's version, say).
    /// Workers of one job must agree on it: it is part of their plan fingerprint, with the
    /// registered names, so workers running other versions of the operators are refused.
    pub fn set_version(&mut self, version: impl Into<String>) -> &mut Registry {
        self.version = Some(version.into());
        self
    }

    /// The version given with [`Registry::set_version`].
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
}

impl OperatorCatalog for Registry {
    fn contains(&self, kind: &str) -> bool {
        self.factories.contains_key(kind)
    }

    fn check_params(&self, kind: &str, params: &toml::Table) -> Result<(), String> {
        match self.factories.get(kind) {
            Some(f) => f.check(params),
            None => Err(format!("`{kind}` is not registered")),
        }
    }

    fn kinds(&self) -> Vec<String> {
        self.factories.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use updraft_runtime::testing::{At, Failing, Fault};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        n: u32,
    }

    fn build(_: P, _: &BuildContext<'_>) -> Result<Box<dyn Operator>, OperatorError> {
        Ok(Box::new(Failing::new(At::End, Fault::Error)))
    }

    #[test]
    fn names_are_checked() {
        let mut r = Registry::new();
        r.register("top_n", build).expect("new name");
        assert_eq!(r.register("top_n", build).err(), Some(RegistryError::Duplicate("top_n".into())));
        assert_eq!(r.register("join", build).err(), Some(RegistryError::Reserved("join".into())));
        assert_eq!(r.register("9lives", build).err(), Some(RegistryError::BadName("9lives".into())));
        assert_eq!(r.kinds(), vec!["top_n".to_string()]);
    }

    #[test]
    fn parameters_are_checked_by_their_type() {
        let mut r = Registry::new();
        r.register("top_n", build).expect("new name");
        let ok: toml::Table = "n = 3".parse().expect("toml");
        assert_eq!(r.check_params("top_n", &ok), Ok(()));
        let missing = r.check_params("top_n", &toml::Table::new()).expect_err("missing");
        assert!(missing.contains("missing field `n`"), "{missing}");
        let unknown: toml::Table = "n = 3\nm = 1".parse().expect("toml");
        let e = r.check_params("top_n", &unknown).expect_err("unknown");
        assert!(e.contains("unknown field `m`"), "{e}");
        let wrong: toml::Table = "n = \"three\"".parse().expect("toml");
        assert!(r.check_params("top_n", &wrong).is_err());
    }
}
