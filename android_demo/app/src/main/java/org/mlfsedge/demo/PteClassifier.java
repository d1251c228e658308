package org.mlfsedge.demo;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;
import org.pytorch.executorch.EValue;
import org.pytorch.executorch.Module;
import org.pytorch.executorch.Tensor;

/**
 * A sub-network exported by {@code mlfs-edge export}: the .pte program run by ExecuTorch (XNNPACK),
 * fed as its JSON manifest says: WordPiece ids and mask, int64 [1, seq], min_length <= seq <=
 * max_length (mlfs_edge/export/manifest.py).
 */
final class PteClassifier implements AutoCloseable {
  static final class Result {
    final String label; // the class, or "embedding" for an encoder export
    final float score; // its probability, or the embedding's norm
    final double latencyMs;

    Result(String label, float score, double latencyMs) {
      this.label = label;
      this.score = score;
      this.latencyMs = latencyMs;
    }
  }

  final String name;
  final String dtype;
  final long sizeBytes;
  private final Module module;
  private final WordPieceTokenizer tokenizer;
  private final String[] labels;
  private final int minLength;
  private final int maxLength;
  private final long padId;

  /** {@code manifest}: NAME.json; the .pte and the vocabulary lie where the manifest says, beside it. */
  PteClassifier(File manifest) throws IOException {
    try {
      JSONObject m = new JSONObject(readUtf8(manifest));
      if (!"mlfs-edge-pte".equals(m.getString("format"))) throw new IOException(manifest + ": not a .pte manifest");
      File dir = manifest.getParentFile();
      File pte = new File(dir, m.getString("pte"));
      JSONObject tok = m.getJSONObject("tokenizer");
      try (FileInputStream vocab = new FileInputStream(new File(dir, tok.getString("vocab")))) {
        tokenizer = WordPieceTokenizer.fromVocab(vocab);
      }
      padId = tok.getLong("pad_token_id");
      JSONArray names = m.getJSONArray("labels");
      labels = new String[names.length()];
      for (int i = 0; i < labels.length; i++) labels[i] = names.getString(i);
      minLength = m.getInt("min_length");
      maxLength = m.getInt("max_length");
      dtype = m.getString("dtype");
      name = m.getString("pte");
      sizeBytes = pte.length();
      module = Module.load(pte.getAbsolutePath());
    } catch (JSONException e) {
      throw new IOException(manifest + ": malformed manifest (" + e.getMessage() + ")", e);
    }
  }

  // Not Files.readAllBytes: NIO file APIs need API level 26, minSdk is 24.
  private static String readUtf8(File file) throws IOException {
    try (InputStream in = new FileInputStream(file)) {
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      byte[] buf = new byte[8192];
      for (int n; (n = in.read(buf)) > 0; ) out.write(buf, 0, n);
      return new String(out.toByteArray(), StandardCharsets.UTF_8);
    }
  }

  WordPieceTokenizer tokenizer() {
    return tokenizer;
  }

  int maxLength() {
    return maxLength;
  }

  Result classify(String text) {
    WordPieceTokenizer.Encoding enc = tokenizer.encode(text, maxLength, false);
    int seq = Math.max(enc.length, minLength);
    long[] ids = new long[seq];
    long[] mask = new long[seq];
    java.util.Arrays.fill(ids, padId);
    System.arraycopy(enc.inputIds, 0, ids, 0, enc.length);
    System.arraycopy(enc.attentionMask, 0, mask, 0, enc.length);
    long[] shape = {1, seq};
    long t0 = System.nanoTime();
    EValue[] out = module.forward(EValue.from(Tensor.fromBlob(ids, shape)), EValue.from(Tensor.fromBlob(mask, shape)));
    float[] values = out[0].toTensor().getDataAsFloatArray();
    double ms = (System.nanoTime() - t0) / 1e6;
    if (labels.length == 0) return new Result("embedding", (float) Scores.norm(values), ms);
    Scores s = Scores.softmax(values, 0, labels.length);
    return new Result(labels[s.best], s.probability, ms);
  }

  @Override
  public void close() {
    module.destroy();
  }
}
