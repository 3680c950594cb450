//! Prices for cost estimates, with the region and date they were recorded, read from a small
//! TOML file (`config/pricing.toml` holds the defaults compiled in here).

use serde::Deserialize;

/// The defaults, as shipped in `config/pricing.toml`.
pub const DEFAULT_PRICING: &str = include_str!("../pricing.toml");

/// Prices in US dollars.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// Region the prices are for.
    pub region: String,
    /// When they were recorded.
    pub as_of: String,
    /// AWS Lambda.
    pub lambda: LambdaPrices,
    /// S3 requests.
    pub s3: S3Prices,
    /// The VM of the always-on cluster compared against.
    pub vm: VmPrice,
    /// The always-on host of the rendezvous a Lambda job needs (`[rendezvous]`; a small VM
    /// when absent).
    #[serde(default = "VmPrice::rendezvous_default")]
    pub rendezvous: VmPrice,
}

/// Lambda prices.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaPrices {
    /// Per GB-second of configured memory.
    pub gb_second: f64,
    /// Per invocation.
    pub request: f64,
}

/// S3 request prices.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Prices {
    /// Per 1000 PUT/LIST requests.
    pub put_per_1000: f64,
    /// Per 1000 GET requests.
    pub get_per_1000: f64,
}

/// One VM.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmPrice {
    /// What it is.
    pub name: String,
    /// Per hour.
    pub hourly: f64,
}

impl VmPrice {
    /// A t4g.nano (2 vCPU, 0.5 GiB), us-east-1 on-demand Linux, recorded 2024-06-01.
    fn rendezvous_default() -> VmPrice {
        VmPrice { name: "t4g.nano (2 vCPU, 0.5 GiB)".into(), hourly: 0.0042 }
    }
}

/// Hours in a month, as AWS bills always-on instances (365 × 24 / 12).
pub const HOURS_PER_MONTH: f64 = 730.0;

/// What a run costs, by part.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CostEstimate {
    /// Lambda GB-seconds.
    pub gb_seconds: f64,
    /// Lambda compute.
    pub lambda_compute: f64,
    /// Lambda invocations.
    pub lambda_requests: f64,
    /// S3 requests.
    pub s3_requests: f64,
    /// Everything on Lambda.
    pub lambda_total: f64,
    /// The same wall time on `workers` always-on VMs.
    pub vm_total: f64,
}

impl Pricing {
    /// Reads prices from TOML text.
    ///
    /// # Errors
    /// Unknown or missing keys, with their names.
    pub fn parse(text: &str) -> Result<Pricing, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The compiled-in defaults (`config/pricing.toml`).
    ///
    /// # Errors
    /// Only if that file is broken (a test keeps it valid).
    pub fn defaults() -> Result<Pricing, String> {
        Pricing::parse(DEFAULT_PRICING).map_err(|e| format!("config/pricing.toml: {e}"))
    }

    /// `workers` functions of `memory_gb` running `seconds` each (billed per ms), with `puts`
    /// and `gets` S3 requests, and the same wall time on `workers` VMs.
    pub fn estimate(&self, workers: u32, seconds: f64, memory_gb: f64, puts: u64, gets: u64) -> CostEstimate {
        let billed = (seconds * 1000.0).ceil() / 1000.0;
        let gb_seconds = f64::from(workers) * billed * memory_gb;
        let lambda_compute = gb_seconds * self.lambda.gb_second;
        let lambda_requests = f64::from(workers) * self.lambda.request;
        let s3_requests =
            puts as f64 / 1000.0 * self.s3.put_per_1000 + gets as f64 / 1000.0 * self.s3.get_per_1000;
        CostEstimate {
            gb_seconds,
            lambda_compute,
            lambda_requests,
            s3_requests,
            lambda_total: lambda_compute + lambda_requests + s3_requests,
            vm_total: f64::from(workers) * seconds / 3600.0 * self.vm.hourly,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_prices_parse_and_estimate() {
        let p = Pricing::defaults().expect("the shipped prices parse");
        assert_eq!(p.region, "us-east-1");
        // 64 functions of 10 GB for 0.96 s: 614.4 GB-s.
        let e = p.estimate(64, 0.96, 10.0, 0, 0);
        assert!((e.gb_seconds - 614.4).abs() < 1e-9);
        assert!((e.lambda_compute - 614.4 * 0.000_016_666_7).abs() < 1e-12);
        assert!((e.lambda_requests - 64.0 * 0.000_000_2).abs() < 1e-15);
        assert!((e.vm_total - 64.0 * 0.96 / 3600.0 * 0.085).abs() < 1e-12);
        // Billing rounds up to the millisecond.
        assert_eq!(p.estimate(1, 0.0001, 1.0, 0, 0).gb_seconds, 0.001);
        assert!(Pricing::parse("region = 1").is_err());
    }
}
