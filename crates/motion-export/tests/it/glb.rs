//! glTF binary export: read back with the `gltf` crate; animation samples, node forward
//! kinematics and skinning must reproduce the input and the body model (Y up).

use anyhow::{Context, Result, bail};
use gltf::animation::util::ReadOutputs;
use motion_export::{GlbOptions, glb_bytes, write_glb};

use crate::common::{
    apply3, files_in, forward_joints_y_up, local_rotations, max_diff, mul3, open_body,
    random_params, temp_dir, y_up,
};

/// The Z-up -> Y-up rotation, row-major.
const C: [f64; 9] = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0];

fn quat_to_matrix(q: [f32; 4]) -> [f64; 9] {
    let [x, y, z, w] = q.map(f64::from);
    [
        1.0 - 2.0 * (y * y + z * z),
        2.0 * (x * y - z * w),
        2.0 * (x * z + y * w),
        2.0 * (x * y + z * w),
        1.0 - 2.0 * (x * x + z * z),
        2.0 * (y * z - x * w),
        2.0 * (x * z - y * w),
        2.0 * (y * z + x * w),
        1.0 - 2.0 * (x * x + y * y),
    ]
}

/// What a reader sees of an exported file.
struct Read {
    /// Rest translation of each node.
    rest_translation: Vec<[f64; 3]>,
    /// Children of each node.
    children: Vec<Vec<usize>>,
    names: Vec<String>,
    times: Vec<f32>,
    /// Animated rotations `[node][frame]` (x, y, z, w).
    rotations: Vec<Vec<[f32; 4]>>,
    /// Animated translations `[node][frame]`.
    translations: Vec<Vec<[f32; 3]>>,
}

fn read(bytes: &[u8]) -> Result<(gltf::Gltf, Read)> {
    let doc = gltf::Gltf::from_slice(bytes)?;
    let blob = doc.blob.clone();
    let get = |b: gltf::Buffer<'_>| match b.source() {
        gltf::buffer::Source::Bin => blob.as_deref(),
        gltf::buffer::Source::Uri(_) => None,
    };
    let n = doc.nodes().count();
    let mut r = Read {
        rest_translation: Vec::new(),
        children: Vec::new(),
        names: Vec::new(),
        times: Vec::new(),
        rotations: vec![Vec::new(); n],
        translations: vec![Vec::new(); n],
    };
    for node in doc.nodes() {
        let (t, rot, s) = node.transform().decomposed();
        assert_eq!(rot, [0.0, 0.0, 0.0, 1.0], "no rest rotation");
        assert_eq!(s, [1.0, 1.0, 1.0], "no scale");
        r.rest_translation.push(t.map(f64::from));
        r.children
            .push(node.children().map(|c| c.index()).collect());
        r.names.push(node.name().unwrap_or_default().to_string());
    }
    let anims: Vec<_> = doc.animations().collect();
    assert_eq!(anims.len(), 1);
    for ch in anims[0].channels() {
        let rd = ch.reader(get);
        let times: Vec<f32> = rd.read_inputs().context("inputs")?.collect();
        if r.times.is_empty() {
            r.times = times;
        } else {
            assert_eq!(times, r.times, "one time line");
        }
        let node = ch.target().node().index();
        match rd.read_outputs().context("outputs")? {
            ReadOutputs::Rotations(q) => r.rotations[node] = q.into_f32().collect(),
            ReadOutputs::Translations(t) => r.translations[node] = t.collect(),
            _ => bail!("unexpected channel"),
        }
    }
    Ok((doc, r))
}

/// World transforms (rotation, position) of nodes `0..nj` at keyframe `k`, by walking the node
/// tree from node 0 with the animated rotations / translations.
fn node_world(r: &Read, nj: usize, k: usize) -> Vec<([f64; 9], [f64; 3])> {
    let mut out = vec![([0.0; 9], [0.0; 3]); nj];
    let local = |j: usize| {
        let rot = quat_to_matrix(r.rotations[j][k]);
        let t = match r.translations[j].get(k) {
            Some(t) => t.map(f64::from),
            None => r.rest_translation[j],
        };
        (rot, t)
    };
    out[0] = local(0);
    let mut stack = vec![0usize];
    while let Some(p) = stack.pop() {
        for &c in &r.children[p] {
            let (lr, lt) = local(c);
            let (pr, pt) = out[p];
            let a = apply3(&pr, &lt);
            out[c] = (mul3(&pr, &lr), [pt[0] + a[0], pt[1] + a[1], pt[2] + a[2]]);
            stack.push(c);
        }
    }
    out
}

#[test]
fn glb_reads_back_with_the_mesh_skin_and_t_keyframes() -> Result<()> {
    let body = open_body()?;
    let t = 5;
    let params = random_params(t, 15, 21)?;
    let bytes = glb_bytes(&body, &params, 20.0, &GlbOptions::default())?;
    let (doc, r) = read(&bytes)?;
    let nj = body.num_joints();
    assert_eq!(doc.nodes().count(), nj + 1);
    assert_eq!(r.names[..nj], smpl::Skeleton::SmplH.names()[..]);
    assert_eq!(r.times.len(), t);
    for (k, x) in r.times.iter().enumerate() {
        assert!((f64::from(*x) - k as f64 / 20.0).abs() < 1e-6);
    }
    assert!(r.rotations.iter().take(nj).all(|q| q.len() == t));
    assert_eq!(r.translations[0].len(), t);
    assert_eq!(
        doc.animations().next().context("anim")?.channels().count(),
        nj + 1
    );

    let skins: Vec<_> = doc.skins().collect();
    assert_eq!(skins.len(), 1);
    assert_eq!(skins[0].joints().count(), nj);
    let meshes: Vec<_> = doc.meshes().collect();
    assert_eq!(meshes.len(), 1);
    let prim = meshes[0].primitives().next().context("primitive")?;
    let blob = doc.blob.clone();
    let rd = prim.reader(|_| blob.as_deref());
    let nv = rd.read_positions().context("positions")?.count();
    assert_eq!(nv, body.num_vertices());
    assert_eq!(rd.read_normals().context("normals")?.count(), nv);
    let idx: Vec<u32> = rd.read_indices().context("indices")?.into_u32().collect();
    assert_eq!(idx.len(), 3 * body.faces().dims()[0]);
    assert_eq!(
        idx,
        body.faces().flatten_all()?.to_vec1::<u32>()?,
        "faces in order"
    );
    let weights: Vec<[f32; 4]> = rd.read_weights(0).context("weights")?.into_f32().collect();
    assert_eq!(weights.len(), nv);
    assert!(
        weights
            .iter()
            .all(|w| (w.iter().sum::<f32>() - 1.0).abs() < 1e-5)
    );
    Ok(())
}

#[test]
fn glb_samples_equal_the_input_rotations_and_root_translation() -> Result<()> {
    let body = open_body()?;
    let t = 4;
    let params = random_params(t, 15, 22)?;
    let (_, r) = read(&glb_bytes(&body, &params, 30.0, &GlbOptions::default())?)?;
    let local = local_rotations(&params)?;
    let transl = params.transl.to_vec2::<f32>()?;
    let rest = body.rest_joints()?.to_vec2::<f32>()?;
    for f in 0..t {
        for (j, expected) in local[f].iter().enumerate() {
            let expected = if j == 0 {
                mul3(&C, expected)
            } else {
                *expected
            };
            let got = quat_to_matrix(r.rotations[j][f]);
            assert!(max_diff(&got, &expected) < 1e-5, "joint {j} frame {f}");
        }
        let p = y_up([0, 1, 2].map(|k| f64::from(transl[f][k]) + f64::from(rest[0][k])));
        let got = r.translations[0][f].map(f64::from);
        assert!(max_diff(&got, &p) < 1e-6, "frame {f}: {got:?} vs {p:?}");
    }
    // Quaternions are sign-continuous over the frames.
    for q in r.rotations.iter().take(body.num_joints()) {
        for w in q.windows(2) {
            let dot: f32 = w[0].iter().zip(&w[1]).map(|(a, b)| a * b).sum();
            assert!(dot >= 0.0);
        }
    }
    Ok(())
}

#[test]
fn glb_node_forward_kinematics_reproduces_the_body_joints_y_up() -> Result<()> {
    let body = open_body()?;
    let t = 6;
    let params = random_params(t, 15, 23)?;
    let (_, r) = read(&glb_bytes(&body, &params, 20.0, &GlbOptions::default())?)?;
    let expected = forward_joints_y_up(&body, &params)?;
    let nj = body.num_joints();
    for k in [0, 3, t - 1] {
        let world = node_world(&r, nj, k);
        for j in 0..nj {
            let d = max_diff(&world[j].1, &expected[k][j]);
            assert!(d < 1e-4, "frame {k} joint {j}: {d} m");
        }
    }
    Ok(())
}

#[test]
fn glb_skinning_reproduces_the_body_vertices_where_four_weights_suffice() -> Result<()> {
    let body = open_body()?;
    let t = 3;
    let params = random_params(t, 15, 24)?;
    let bytes = glb_bytes(&body, &params, 20.0, &GlbOptions::default())?;
    let (doc, r) = read(&bytes)?;
    let blob = doc.blob.clone();
    let get = |_: gltf::Buffer<'_>| blob.as_deref();
    let skin = doc.skins().next().context("skin")?;
    let ibm: Vec<[[f32; 4]; 4]> = skin
        .reader(get)
        .read_inverse_bind_matrices()
        .context("inverse bind matrices")?
        .collect();
    let prim = doc
        .meshes()
        .next()
        .and_then(|m| m.primitives().next())
        .context("primitive")?;
    let rd = prim.reader(get);
    let pos: Vec<[f32; 3]> = rd.read_positions().context("positions")?.collect();
    let joints: Vec<[u16; 4]> = rd.read_joints(0).context("joints")?.into_u16().collect();
    let weights: Vec<[f32; 4]> = rd.read_weights(0).context("weights")?.into_f32().collect();

    let verts = body.forward(&params)?.vertices.to_vec3::<f32>()?;
    let influences: Vec<usize> = body
        .weights()
        .to_vec2::<f32>()?
        .iter()
        .map(|w| w.iter().filter(|x| **x > 0.0).count())
        .collect();
    let nj = body.num_joints();
    let mut checked = 0;
    for (k, frame) in verts.iter().enumerate() {
        let world = node_world(&r, nj, k);
        // Joint matrix M_j = world_j @ IBM_j (IBM column-major, applied to a point).
        let skin_point = |v: [f64; 3], j: usize| {
            let m = ibm[j];
            let b = [0, 1, 2].map(|i| {
                (0..3).map(|c| f64::from(m[c][i]) * v[c]).sum::<f64>() + f64::from(m[3][i])
            });
            let (wr, wt) = world[j];
            let a = apply3(&wr, &b);
            [a[0] + wt[0], a[1] + wt[1], a[2] + wt[2]]
        };
        for (v, p) in pos.iter().enumerate() {
            if influences[v] > 4 {
                continue;
            }
            let p = p.map(f64::from);
            let mut out = [0.0; 3];
            for s in 0..4 {
                let q = skin_point(p, usize::from(joints[v][s]));
                for c in 0..3 {
                    out[c] += f64::from(weights[v][s]) * q[c];
                }
            }
            let vk = &frame[v];
            let e = y_up([0, 1, 2].map(|c| f64::from(vk[c])));
            let d = max_diff(&out, &e);
            assert!(d < 1e-4, "frame {k} vertex {v}: {d} m");
            checked += 1;
        }
    }
    assert!(
        checked > t * pos.len() / 2,
        "only {checked} vertices checked"
    );
    Ok(())
}

#[test]
fn glb_without_mesh_holds_the_animated_skeleton_only() -> Result<()> {
    let body = open_body()?;
    let params = random_params(2, 15, 25)?;
    let bytes = glb_bytes(&body, &params, 20.0, &GlbOptions { mesh: false })?;
    let (doc, r) = read(&bytes)?;
    assert_eq!(doc.nodes().count(), body.num_joints());
    assert_eq!(doc.meshes().count(), 0);
    assert_eq!(doc.skins().count(), 0);
    assert_eq!(r.times.len(), 2);
    Ok(())
}

#[test]
fn write_glb_writes_the_same_bytes_atomically() -> Result<()> {
    let body = open_body()?;
    let params = random_params(2, 15, 26)?;
    let dir = temp_dir("glb")?;
    let path = dir.join("motion.glb");
    write_glb(&path, &body, &params, 20.0, &GlbOptions::default())?;
    assert_eq!(files_in(&dir)?, ["motion.glb"]);
    assert_eq!(
        std::fs::read(&path)?,
        glb_bytes(&body, &params, 20.0, &GlbOptions::default())?
    );
    let mut bad = params.clone();
    bad.transl = bad.transl.narrow(0, 0, 1)?;
    assert!(
        write_glb(
            dir.join("bad.glb"),
            &body,
            &bad,
            20.0,
            &GlbOptions::default()
        )
        .is_err()
    );
    assert_eq!(files_in(&dir)?, ["motion.glb"]);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
