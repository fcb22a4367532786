//! Core ML through objc2-core-ml (Apple platforms only). Every Objective-C
//! call is `unsafe` in the bindings; each block below states why it holds.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::Duration;

use anectx_core::placement::Device;
use block2::RcBlock;
use objc2::rc::{autoreleasepool, Retained};
use objc2::runtime::{AnyObject, NSObjectProtocol, ProtocolObject};
use objc2::{available, AllocAnyThread, ClassType};
use objc2_core_ml::{
    MLCPUComputeDevice, MLComputeDeviceProtocol, MLComputePlan, MLComputeUnits,
    MLDictionaryFeatureProvider, MLFeatureProvider, MLFeatureValue, MLGPUComputeDevice, MLModel,
    MLModelConfiguration, MLMultiArray, MLMultiArrayDataType, MLNeuralEngineComputeDevice,
};
use objc2_foundation::{
    NSArray, NSDictionary, NSError, NSInteger, NSNumber, NSProcessInfo, NSString,
    NSUnderlyingErrorKey, NSURL,
};

use crate::{
    compile_cached, default_cache_root, ml_compute_units, strided_to_dense, unique_suffix,
    CoreMlConfig, CoreMlError, HostArray, OpPlacement,
};

pub(crate) struct Model {
    model: Retained<MLModel>,
    compiled: PathBuf,
}

// SAFETY: an MLModel may be used from any thread (Apple documents prediction
// as thread-safe); anectx moves the backend to one dedicated thread and never
// shares the Objective-C objects between threads concurrently.
unsafe impl Send for Model {}

/// An NSError with its cause: domain and code, the localized description,
/// the failure reason and the chain of underlying errors (Core ML puts the
/// compiler's or the ANE service's reason there).
fn ns_err(e: &NSError) -> String {
    let mut parts = Vec::new();
    let mut cur: Option<Retained<NSError>> = None;
    for depth in 0..4 {
        let err: &NSError = match &cur {
            Some(c) => c,
            None if depth == 0 => e,
            None => break,
        };
        let mut s = format!(
            "{} ({} {})",
            err.localizedDescription(),
            err.domain(),
            err.code()
        );
        if let Some(r) = err.localizedFailureReason() {
            s.push_str(&format!(": {r}"));
        }
        parts.push(s);
        // SAFETY: NSUnderlyingErrorKey is a valid key; the value, when
        // present, is documented to be an NSError (checked by the downcast).
        let next = unsafe { err.userInfo().objectForKey(NSUnderlyingErrorKey) }
            .and_then(|o| o.downcast::<NSError>().ok());
        match next {
            Some(n) => cur = Some(n),
            None => break,
        }
    }
    parts.join("; caused by: ")
}

/// The OS build, for the compile cache key.
pub(crate) fn os_build() -> String {
    autoreleasepool(|_| {
        NSProcessInfo::processInfo()
            .operatingSystemVersionString()
            .to_string()
    })
}

/// `MLComputePlan` and the asynchronous compile call exist from macOS 14.4
/// (iOS / tvOS 17.4, watchOS 10.4, visionOS 1.1); objc2 panics on a missing
/// class, so every use is gated on this.
fn has_compute_plan() -> bool {
    available!(
        macos = 14.4,
        ios = 17.4,
        tvos = 17.4,
        watchos = 10.4,
        visionos = 1.1
    )
}

fn path_str(p: &Path) -> Result<Retained<NSString>, CoreMlError> {
    p.to_str()
        .map(NSString::from_str)
        .ok_or_else(|| CoreMlError::Io {
            path: p.to_path_buf(),
            message: "path is not valid UTF-8".into(),
        })
}

fn configuration(units: anectx_core::ComputeUnits) -> Retained<MLModelConfiguration> {
    // SAFETY: plain object creation and a setter taking a valid enum value.
    unsafe {
        let cfg = MLModelConfiguration::new();
        cfg.setComputeUnits(MLComputeUnits(ml_compute_units(units) as NSInteger));
        cfg
    }
}

fn url_path(u: &NSURL) -> Option<PathBuf> {
    u.path().map(|s| PathBuf::from(s.to_string()))
}

/// Moves Core ML's compiled folder to `own` (same file system), or leaves
/// it where it is for [`compile_cached`] to copy.
fn take_compiled(from: &Path, own: &Path) -> PathBuf {
    if std::fs::rename(from, own).is_ok() {
        own.to_path_buf()
    } else {
        from.to_path_buf()
    }
}

/// Compiles the package to Core ML's temporary location and moves the result
/// to a folder of ours under `cache_root`, then [`compile_cached`] installs
/// it. Uses the asynchronous call where it exists (macOS 14.4+), the
/// deprecated synchronous one before.
fn compile_to_temp(package: &Path, cache_root: &Path) -> Result<PathBuf, CoreMlError> {
    let cerr = |message: String| CoreMlError::Compile {
        path: package.to_path_buf(),
        message,
    };
    let s = path_str(package)?;
    let url = NSURL::fileURLWithPath(&s);
    let own = cache_root.join(format!(".compiled.{}", unique_suffix()));
    if !has_compute_plan() {
        // SAFETY: `url` is a valid file URL; the call returns a new URL or an error.
        #[allow(deprecated)]
        let tmp =
            unsafe { MLModel::compileModelAtURL_error(&url) }.map_err(|e| cerr(ns_err(&e)))?;
        let p =
            url_path(&tmp).ok_or_else(|| cerr("compiler returned a URL without a path".into()))?;
        return Ok(take_compiled(&p, &own));
    }
    let (tx, rx) = std::sync::mpsc::channel::<Result<PathBuf, String>>();
    let handler = RcBlock::new(move |out: *mut NSURL, err: *mut NSError| {
        let r = if let Some(u) = NonNull::new(out) {
            // SAFETY: Core ML passes a valid URL for the handler's duration.
            match url_path(unsafe { u.as_ref() }) {
                // Moved out before the handler returns, in case Core ML
                // removes its temporary folder afterwards.
                Some(p) => Ok(take_compiled(&p, &own)),
                None => Err("compiler returned a URL without a path".into()),
            }
        } else if let Some(e) = NonNull::new(err) {
            // SAFETY: likewise for the error.
            Err(ns_err(unsafe { e.as_ref() }))
        } else {
            Err("the compiler returned neither a model nor an error".into())
        };
        let _ = tx.send(r);
    });
    // SAFETY: valid URL; the handler is retained by Core ML until it runs.
    unsafe { MLModel::compileModelAtURL_completionHandler(&url, &handler) };
    rx.recv_timeout(Duration::from_secs(600))
        .map_err(|_| cerr("the compiler did not answer within 10 minutes".into()))?
        .map_err(cerr)
}

/// Compiles the package unless a compilation of the same content on this OS
/// build is cached.
fn compile(package: &Path, cache_root: &Path) -> Result<PathBuf, CoreMlError> {
    let build = os_build();
    compile_cached(package, cache_root, &build, |p| {
        autoreleasepool(|_| compile_to_temp(p, cache_root))
    })
}

fn dims(arr: &NSArray<NSNumber>) -> Vec<usize> {
    arr.to_vec()
        .iter()
        .map(|n| n.integerValue().max(0) as usize)
        .collect()
}

fn ns_shape(shape: &[usize]) -> Retained<NSArray<NSNumber>> {
    let nums: Vec<Retained<NSNumber>> = shape
        .iter()
        .map(|&d| NSNumber::numberWithInteger(d as NSInteger))
        .collect();
    NSArray::from_retained_slice(&nums)
}

fn make_array(a: &HostArray) -> Result<Retained<MLMultiArray>, CoreMlError> {
    let (shape, dtype) = match a {
        HostArray::F32 { shape, .. } => (shape, MLMultiArrayDataType::Float32),
        HostArray::I32 { shape, .. } => (shape, MLMultiArrayDataType::Int32),
    };
    // SAFETY: a freshly allocated array of a supported type and valid shape.
    let arr = unsafe {
        MLMultiArray::initWithShape_dataType_error(MLMultiArray::alloc(), &ns_shape(shape), dtype)
    }
    .map_err(|e| CoreMlError::Input(ns_err(&e)))?;
    let failed = RefCell::new(None::<String>);
    let block = RcBlock::new(
        |ptr: NonNull<c_void>, size: NSInteger, strides: NonNull<NSArray<NSNumber>>| {
            // SAFETY: Core ML passes a live NSArray for the duration of the block.
            let strides = dims(unsafe { strides.as_ref() });
            let total: usize = shape.iter().product();
            let mut idx = vec![0usize; shape.len()];
            let elem = 4usize;
            for k in 0..total {
                let off: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
                if (off + 1) * elem > size.max(0) as usize {
                    *failed.borrow_mut() = Some("input buffer smaller than its strides".into());
                    return;
                }
                // SAFETY: `off` is within the `size` bytes Core ML handed us.
                unsafe {
                    match a {
                        HostArray::F32 { data, .. } => {
                            *ptr.cast::<f32>().as_ptr().add(off) = data[k]
                        }
                        HostArray::I32 { data, .. } => {
                            *ptr.cast::<i32>().as_ptr().add(off) = data[k]
                        }
                    }
                }
                for d in (0..shape.len()).rev() {
                    idx[d] += 1;
                    if idx[d] < shape[d] {
                        break;
                    }
                    idx[d] = 0;
                }
            }
        },
    );
    // SAFETY: the block only writes inside the buffer it is given.
    unsafe { arr.getMutableBytesWithHandler(&block) };
    drop(block);
    if let Some(m) = failed.into_inner() {
        return Err(CoreMlError::Input(m));
    }
    Ok(arr)
}

fn read_array(arr: &MLMultiArray) -> Result<HostArray, CoreMlError> {
    // SAFETY: read-only accessors of a live array.
    let (shape, strides, dtype) =
        unsafe { (dims(&arr.shape()), dims(&arr.strides()), arr.dataType()) };
    let out = RefCell::new(None::<Option<Vec<f32>>>);
    let block = RcBlock::new(|ptr: NonNull<c_void>, size: NSInteger| {
        let size = size.max(0) as usize;
        // SAFETY: Core ML gives a readable buffer of `size` bytes for the block's duration.
        let v = unsafe {
            if dtype == MLMultiArrayDataType::Float32 {
                let s = std::slice::from_raw_parts(ptr.cast::<f32>().as_ptr(), size / 4);
                strided_to_dense(s, &shape, &strides)
            } else if dtype == MLMultiArrayDataType::Float16 {
                let s = std::slice::from_raw_parts(ptr.cast::<u16>().as_ptr(), size / 2);
                strided_to_dense(s, &shape, &strides).map(|v| {
                    v.into_iter()
                        .map(|b| half::f16::from_bits(b).to_f32())
                        .collect()
                })
            } else if dtype == MLMultiArrayDataType::Int32 {
                let s = std::slice::from_raw_parts(ptr.cast::<i32>().as_ptr(), size / 4);
                strided_to_dense(s, &shape, &strides)
                    .map(|v| v.into_iter().map(|x| x as f32).collect())
            } else {
                None
            }
        };
        *out.borrow_mut() = Some(v);
    });
    // SAFETY: the block only reads inside the buffer it is given.
    unsafe { arr.getBytesWithHandler(&block) };
    drop(block);
    match out.into_inner() {
        Some(Some(data)) => Ok(HostArray::F32 { shape, data }),
        Some(None) => Err(CoreMlError::Predict(format!(
            "output array of type {:#x} or strides {strides:?} not readable",
            dtype.0
        ))),
        None => Err(CoreMlError::Predict(
            "Core ML did not hand out the output buffer".into(),
        )),
    }
}

fn device_of(dev: &ProtocolObject<dyn MLComputeDeviceProtocol>) -> Device {
    if dev.isKindOfClass(MLNeuralEngineComputeDevice::class()) {
        Device::NeuralEngine
    } else if dev.isKindOfClass(MLGPUComputeDevice::class()) {
        Device::Gpu
    } else if dev.isKindOfClass(MLCPUComputeDevice::class()) {
        Device::Cpu
    } else {
        Device::None
    }
}

fn plan_ops(plan: &MLComputePlan) -> Result<Vec<OpPlacement>, String> {
    // SAFETY: read-only walks of the plan's model structure.
    unsafe {
        let program = plan
            .modelStructure()
            .program()
            .ok_or("the model is not an ML Program")?;
        let main = program
            .functions()
            .objectForKey(&NSString::from_str("main"))
            .ok_or("the program has no `main` function")?;
        let mut out = Vec::new();
        for op in main.block().operations().to_vec() {
            let op_type = op.operatorName().to_string();
            let outputs = op
                .outputs()
                .to_vec()
                .iter()
                .map(|o| o.name().to_string())
                .collect();
            let (preferred, supported) = match plan.computeDeviceUsageForMLProgramOperation(&op) {
                Some(u) => (
                    device_of(&u.preferredComputeDevice()),
                    u.supportedComputeDevices()
                        .to_vec()
                        .iter()
                        .map(|d| device_of(d))
                        .collect(),
                ),
                None => (Device::None, Vec::new()),
            };
            let cost = plan
                .estimatedCostOfMLProgramOperation(&op)
                .map(|c| c.weight());
            out.push(OpPlacement {
                op_type,
                outputs,
                preferred,
                supported,
                cost,
            });
        }
        Ok(out)
    }
}

impl Model {
    pub(crate) fn load(config: &CoreMlConfig) -> Result<Self, CoreMlError> {
        let root = match &config.cache_dir {
            Some(d) => d.clone(),
            None => default_cache_root()?,
        };
        let compiled = compile(&config.package, &root)?;
        autoreleasepool(|_| {
            let s = path_str(&compiled)?;
            let url = NSURL::fileURLWithPath(&s);
            let cfg = configuration(config.units);
            // SAFETY: valid compiled-model URL and configuration.
            let model = unsafe { MLModel::modelWithContentsOfURL_configuration_error(&url, &cfg) }
                .map_err(|e| CoreMlError::Load {
                    path: compiled.clone(),
                    message: ns_err(&e),
                })?;
            Ok(Self { model, compiled })
        })
    }

    pub(crate) fn output_shape(&self, name: &str) -> Option<Vec<usize>> {
        autoreleasepool(|_| {
            // SAFETY: read-only accessors of the model description.
            unsafe {
                let outputs = self.model.modelDescription().outputDescriptionsByName();
                let desc = outputs.objectForKey(&NSString::from_str(name))?;
                let shape = dims(&desc.multiArrayConstraint()?.shape());
                (!shape.is_empty()).then_some(shape)
            }
        })
    }

    pub(crate) fn input_shapes(&self) -> Result<BTreeMap<String, Vec<Vec<usize>>>, CoreMlError> {
        autoreleasepool(|_| self.input_shapes_in_pool())
    }

    fn input_shapes_in_pool(&self) -> Result<BTreeMap<String, Vec<Vec<usize>>>, CoreMlError> {
        let mut out = BTreeMap::new();
        // SAFETY: read-only accessors of the model description.
        unsafe {
            let inputs = self.model.modelDescription().inputDescriptionsByName();
            for key in inputs.allKeys().to_vec() {
                let Some(desc) = inputs.objectForKey(&key) else {
                    continue;
                };
                let Some(c) = desc.multiArrayConstraint() else {
                    continue;
                };
                let mut shapes: Vec<Vec<usize>> = c
                    .shapeConstraint()
                    .enumeratedShapes()
                    .to_vec()
                    .iter()
                    .map(|s| dims(s))
                    .collect();
                if shapes.is_empty() {
                    shapes.push(dims(&c.shape()));
                }
                out.insert(key.to_string(), shapes);
            }
        }
        Ok(out)
    }

    /// One prediction inside its own autorelease pool: the feature values,
    /// providers and result arrays Core ML autoreleases are freed per call,
    /// not when a long-lived thread (the server's backend, the bench) ends.
    pub(crate) fn predict(
        &self,
        inputs: &[(&str, HostArray)],
    ) -> Result<BTreeMap<String, HostArray>, CoreMlError> {
        autoreleasepool(|_| self.predict_in_pool(inputs))
    }

    fn predict_in_pool(
        &self,
        inputs: &[(&str, HostArray)],
    ) -> Result<BTreeMap<String, HostArray>, CoreMlError> {
        let keys: Vec<Retained<NSString>> =
            inputs.iter().map(|(n, _)| NSString::from_str(n)).collect();
        let mut values: Vec<Retained<AnyObject>> = Vec::new();
        for (_, a) in inputs {
            let arr = make_array(a)?;
            // SAFETY: wraps a valid array.
            let v = unsafe { MLFeatureValue::featureValueWithMultiArray(&arr) };
            values.push(Retained::into_super(Retained::into_super(v)));
        }
        let key_refs: Vec<&NSString> = keys.iter().map(|k| &**k).collect();
        let dict: Retained<NSDictionary<NSString, AnyObject>> =
            NSDictionary::from_retained_objects(&key_refs, &values);
        // SAFETY: a dictionary of feature values keyed by input names.
        let provider = unsafe {
            MLDictionaryFeatureProvider::initWithDictionary_error(
                MLDictionaryFeatureProvider::alloc(),
                &dict,
            )
        }
        .map_err(|e| CoreMlError::Input(ns_err(&e)))?;
        // SAFETY: the provider conforms to MLFeatureProvider.
        let result = unsafe {
            self.model
                .predictionFromFeatures_error(ProtocolObject::from_ref(&*provider))
        }
        .map_err(|e| CoreMlError::Predict(ns_err(&e)))?;
        let mut out = BTreeMap::new();
        // SAFETY: read-only accessors of the prediction result.
        unsafe {
            let names = self
                .model
                .modelDescription()
                .outputDescriptionsByName()
                .allKeys();
            for name in names.to_vec() {
                let Some(v) = result.featureValueForName(&name) else {
                    continue;
                };
                let Some(arr) = v.multiArrayValue() else {
                    continue;
                };
                out.insert(name.to_string(), read_array(&arr)?);
            }
        }
        Ok(out)
    }

    pub(crate) fn placement(&self, config: &CoreMlConfig) -> Result<Vec<OpPlacement>, CoreMlError> {
        if !has_compute_plan() {
            return Err(CoreMlError::Unsupported(
                "placement needs MLComputePlan, which macOS 14.4 (iOS 17.4) introduced".into(),
            ));
        }
        autoreleasepool(|_| self.placement_in_pool(config))
    }

    fn placement_in_pool(&self, config: &CoreMlConfig) -> Result<Vec<OpPlacement>, CoreMlError> {
        let s = path_str(&self.compiled)?;
        let url = NSURL::fileURLWithPath(&s);
        let cfg = configuration(config.units);
        let (tx, rx) = std::sync::mpsc::channel::<Result<Vec<OpPlacement>, String>>();
        let handler = RcBlock::new(move |plan: *mut MLComputePlan, err: *mut NSError| {
            let r = if let Some(plan) = NonNull::new(plan) {
                // SAFETY: Core ML passes a valid plan for the handler's duration.
                autoreleasepool(|_| plan_ops(unsafe { plan.as_ref() }))
            } else if let Some(e) = NonNull::new(err) {
                // SAFETY: likewise for the error.
                Err(ns_err(unsafe { e.as_ref() }))
            } else {
                Err("MLComputePlan returned neither a plan nor an error".into())
            };
            let _ = tx.send(r);
        });
        // SAFETY: valid URL and configuration; the handler outlives the call.
        unsafe {
            MLComputePlan::loadContentsOfURL_configuration_completionHandler(&url, &cfg, &handler)
        };
        rx.recv_timeout(Duration::from_secs(120))
            .map_err(|_| {
                CoreMlError::Unsupported("MLComputePlan did not answer within 120 s".into())
            })?
            .map_err(CoreMlError::Predict)
    }
}
