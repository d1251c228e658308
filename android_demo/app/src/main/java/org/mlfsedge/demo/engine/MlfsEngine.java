package org.mlfsedge.demo.engine;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * The project's C++ engine over one memory-mapped {@code .mlfs} packed supernet, through JNI
 * ({@code libmlfs_jni.so}, built from {@code app/src/main/cpp}). Plain Java with no Android
 * dependency, so the host JVM tests it against the Python engine ({@code tests/test_jni_bridge.py}).
 * An encoder file runs with {@link #run}; a decoder (causal LM) file continues a prompt of token ids
 * with {@link #generate}, optionally streaming each new token to a {@link TokenListener}.
 *
 * <p>Every sub-network of the supernet runs from the same file: a {@link Subnet} only says which
 * layers, and how many heads and MLP channels of each, to use. Bad arguments raise Java exceptions
 * ({@link IllegalArgumentException}, {@link IOException}, {@link IllegalStateException} after
 * {@link #close()}); the native code never lets a C++ exception or a crash through. Methods are
 * synchronized so that {@link #close()} cannot free the engine under a running call.
 */
public final class MlfsEngine implements AutoCloseable {
  static {
    System.loadLibrary("mlfs_jni");
  }

  /** A sub-network: kept layer indices (increasing) and the heads / MLP width used in each. */
  public static final class Subnet {
    final int[] layers;
    final int[] heads;
    final int[] mlp;

    private Subnet(int[] layers, int[] heads, int[] mlp) {
      this.layers = layers;
      this.heads = heads;
      this.mlp = mlp;
    }

    /** Checked against a model when used; here only for matching lengths. */
    public static Subnet of(int[] layers, int[] heads, int[] mlp) {
      if (layers == null || heads == null || mlp == null) {
        throw new IllegalArgumentException("layers, heads and mlp must not be null");
      }
      if (layers.length != heads.length || layers.length != mlp.length) {
        throw new IllegalArgumentException("layers, heads and mlp must have one entry per kept layer, got "
            + layers.length + ", " + heads.length + ", " + mlp.length);
      }
      return new Subnet(layers.clone(), heads.clone(), mlp.clone());
    }

    public int depth() {
      return layers.length;
    }

    /**
     * The first {@code depth} kept layers at the same widths: a speculative draft that shares this
     * sub-network's KV cache (its keys and values at those layers are the same).
     */
    public Subnet prefix(int depth) {
      if (depth < 1 || depth > layers.length) {
        throw new IllegalArgumentException("prefix depth must be in 1.." + layers.length + ", got " + depth);
      }
      return new Subnet(Arrays.copyOf(layers, depth), Arrays.copyOf(heads, depth), Arrays.copyOf(mlp, depth));
    }

    public int[] layers() {
      return layers.clone();
    }

    public int[] heads() {
      return heads.clone();
    }

    public int[] mlp() {
      return mlp.clone();
    }

    /** L&lt;depth&gt;-H&lt;heads&gt;-F&lt;mlp&gt;, as the Python side names it. */
    public String name() {
      return "L" + layers.length + "-H" + join(heads) + "-F" + join(mlp);
    }

    private static String join(int[] values) {
      boolean same = true;
      for (int v : values) same &= v == values[0];
      if (same && values.length > 0) return Integer.toString(values[0]);
      StringBuilder sb = new StringBuilder();
      for (int i = 0; i < values.length; i++) sb.append(i > 0 ? "/" : "").append(values[i]);
      return sb.toString();
    }

    @Override
    public boolean equals(Object o) {
      if (!(o instanceof Subnet)) return false;
      Subnet s = (Subnet) o;
      return Arrays.equals(layers, s.layers) && Arrays.equals(heads, s.heads) && Arrays.equals(mlp, s.mlp);
    }

    @Override
    public int hashCode() {
      return 31 * (31 * Arrays.hashCode(layers) + Arrays.hashCode(heads)) + Arrays.hashCode(mlp);
    }

    @Override
    public String toString() {
      return name();
    }
  }

  /** What {@link #pickLargestUnderBudget} chose, with every candidate's measured latency. */
  public static final class Pick {
    /** The chosen sub-network, or null when none runs within the budget. */
    public final Subnet subnet;
    public final int index;
    public final double[] latencyMs;

    Pick(Subnet subnet, int index, double[] latencyMs) {
      this.subnet = subnet;
      this.index = index;
      this.latencyMs = latencyMs;
    }
  }

  /** Called on the generating thread after each new token; return false to stop early. */
  public interface TokenListener {
    boolean onToken(int tokenId);
  }

  /**
   * How {@link #generate} samples and stops; the defaults are greedy, 32 new tokens, no stop ids,
   * an fp32 KV cache. Setters return this. Values are checked by the engine when generating.
   */
  public static final class GenerateOptions {
    int maxNewTokens = 32;
    float temperature = 0f;
    int topK = 0;
    float topP = 1f;
    float repetitionPenalty = 1f;
    long seed = 0;
    int[] stopIds = new int[0];
    boolean fp16Cache = false;
    Subnet draft = null;
    int draftK = 4;
    int draftVocab = 0;

    /**
     * Self-speculative decoding: {@code draft} (a smaller sub-network of the same file, e.g. the
     * generating one's first layers) proposes tokens, the generating sub-network verifies them in
     * one pass. Greedy output is unchanged; null turns it off.
     */
    public GenerateOptions draft(Subnet d) {
      draft = d;
      return this;
    }

    /** Draft tokens per round to start with (adapted to the measured acceptance), 1..64. */
    public GenerateOptions draftK(int k) {
      draftK = k;
      return this;
    }

    /** The draft scores only the first n tokens of a frequency-ordered file (a multiple of 32; 0 = all). */
    public GenerateOptions draftVocab(int n) {
      draftVocab = n;
      return this;
    }

    public GenerateOptions maxNewTokens(int n) {
      maxNewTokens = n;
      return this;
    }

    /** 0: greedy (argmax); otherwise a seeded draw after top-k / top-p. */
    public GenerateOptions temperature(float t) {
      temperature = t;
      return this;
    }

    /** 0: off. */
    public GenerateOptions topK(int k) {
      topK = k;
      return this;
    }

    /** 1: off. */
    public GenerateOptions topP(float p) {
      topP = p;
      return this;
    }

    /** 1: off (Hugging Face's rule). */
    public GenerateOptions repetitionPenalty(float r) {
      repetitionPenalty = r;
      return this;
    }

    /** All 64 bits count: a negative long is the unsigned seed with the same bits. */
    public GenerateOptions seed(long s) {
      seed = s;
      return this;
    }

    /** Generation ends after emitting one of these (e.g. the model's end-of-sequence id). */
    public GenerateOptions stopIds(int... ids) {
      if (ids == null) throw new IllegalArgumentException("stopIds must not be null");
      stopIds = ids.clone();
      return this;
    }

    /** Keep the KV cache in fp16 (half the memory; attention converts back). */
    public GenerateOptions fp16Cache(boolean on) {
      fp16Cache = on;
      return this;
    }
  }

  /** The new token ids of one generation and how fast they came. */
  public static final class Generated {
    public final int[] ids;
    public final int promptTokens;
    public final double prefillSeconds;
    public final double decodeSeconds;
    /** With a draft: verification rounds, drafted tokens, accepted drafted tokens (else 0). */
    public final int rounds, drafted, accepted;

    Generated(int[] ids, double[] stats) {
      this.ids = ids;
      this.promptTokens = (int) stats[0];
      this.prefillSeconds = stats[1];
      this.decodeSeconds = stats[2];
      this.rounds = (int) stats[3];
      this.drafted = (int) stats[4];
      this.accepted = (int) stats[5];
    }

    /** Accepted / drafted tokens (0 without a draft). */
    public double acceptanceRate() {
      return drafted > 0 ? (double) accepted / drafted : 0;
    }

    /** Prompt tokens per second (the prefill also produced the first new token). */
    public double prefillTokensPerSecond() {
      return prefillSeconds > 0 ? promptTokens / prefillSeconds : 0;
    }

    /** New tokens per second after the first. */
    public double decodeTokensPerSecond() {
      return decodeSeconds > 0 ? (ids.length - 1) / decodeSeconds : 0;
    }
  }

  // Indices into nativeDims(): the model's dimensions as the file's header gives them.
  private static final int NUM_LAYERS = 0, HIDDEN = 1, NUM_HEADS = 2, INTERMEDIATE = 3, VOCAB = 4,
      MAX_POSITIONS = 5, NUM_LABELS = 6, OUTPUT_DIM = 7, IS_DECODER = 8, NUM_KV_HEADS = 9;

  private long handle;
  private final int[] dims;
  private int threads = 1;

  private MlfsEngine(long handle) {
    this.handle = handle;
    try {
      this.dims = nativeDims(handle);
    } catch (RuntimeException e) {
      nativeClose(handle);
      throw e;
    }
  }

  /** mmap and validate {@code path} (checksum included); IOException naming what is wrong. */
  public static MlfsEngine open(String path) throws IOException {
    return new MlfsEngine(nativeOpen(path, true));
  }

  /** As {@link #open(String)}; {@code verifyChecksum=false} skips the CRC pass over the whole file. */
  public static MlfsEngine open(String path, boolean verifyChecksum) throws IOException {
    return new MlfsEngine(nativeOpen(path, verifyChecksum));
  }

  @Override
  public synchronized void close() {
    if (handle != 0) {
      nativeClose(handle);
      handle = 0;
    }
  }

  public synchronized boolean isClosed() {
    return handle == 0;
  }

  private long live() {
    if (handle == 0) throw new IllegalStateException("this MlfsEngine is closed");
    return handle;
  }

  // --- what the file holds -----------------------------------------------------------------------

  /** "fp32", "fp16" or "int8": how the Linear weights are stored. */
  public synchronized String dtype() {
    return nativeDtype(live());
  }

  public synchronized long fileSizeBytes() {
    return nativeFileSize(live());
  }

  /** The file's provenance record (UTF-8 JSON: arch, labels, tokenizer, ...). */
  public synchronized String metadataJson() {
    return new String(nativeMetadata(live()), StandardCharsets.UTF_8);
  }

  public int numLayers() {
    return dims[NUM_LAYERS];
  }

  public int hidden() {
    return dims[HIDDEN];
  }

  public int numHeads() {
    return dims[NUM_HEADS];
  }

  public int intermediate() {
    return dims[INTERMEDIATE];
  }

  public int vocabSize() {
    return dims[VOCAB];
  }

  public int maxPositions() {
    return dims[MAX_POSITIONS];
  }

  /** Classes of the packed classifier head; 0 for a plain encoder. */
  public int numLabels() {
    return dims[NUM_LABELS];
  }

  /** Width of one output row: numLabels() logits, or the pooled embedding (hidden()); a decoder's vocabSize(). */
  public int outputDim() {
    return dims[OUTPUT_DIM];
  }

  /** True for a decoder (causal LM) file: {@link #generate}; false for an encoder: {@link #run}. */
  public boolean isDecoder() {
    return dims[IS_DECODER] == 1;
  }

  /** Key/value heads per layer (a decoder's sub-network keeps whole groups of numHeads() / this). */
  public int numKvHeads() {
    return dims[NUM_KV_HEADS];
  }

  /** CPU threads for run(), generate() and profiling, 1..256. */
  public synchronized void setThreads(int threads) {
    if (threads < 1 || threads > 256) {
      throw new IllegalArgumentException("threads must be between 1 and 256, got " + threads);
    }
    this.threads = threads;
  }

  public synchronized int threads() {
    return threads;
  }

  // --- sub-networks ------------------------------------------------------------------------------

  public Subnet full() {
    return uniform(numLayers(), numHeads(), intermediate());
  }

  /** {@code depth} layers spread over the stack, each with the first heads / mlp channels. */
  public synchronized Subnet uniform(int depth, int heads, int mlp) {
    int[] layers = nativeUniformLayers(live(), depth, heads, mlp);
    int[] h = new int[layers.length];
    int[] f = new int[layers.length];
    Arrays.fill(h, heads);
    Arrays.fill(f, mlp);
    return new Subnet(layers, h, f);
  }

  /** The default palette (depths from half up x 1/4..1 of heads and MLP width), smallest first. */
  public synchronized Subnet[] defaultCandidates() {
    int[][] flat = nativeDefaultCandidates(live());
    Subnet[] out = new Subnet[flat.length];
    for (int i = 0; i < flat.length; i++) out[i] = fromFlat(flat[i]);
    return out;
  }

  /** Parameters of the kept transformer layers; IllegalArgumentException if it does not fit. */
  public synchronized long layerParams(Subnet subnet) {
    Subnet s = nonNull(subnet);
    return nativeLayerParams(live(), s.layers, s.heads, s.mlp);
  }

  // --- compute -----------------------------------------------------------------------------------

  /** One sequence: logits (classifier) or the pooled embedding, outputDim() floats. */
  public float[] run(int[] inputIds, int[] attentionMask, Subnet subnet) {
    return run(inputIds, attentionMask, 1, subnet);
  }

  /** {@code batch} rows of equal length, row-major; returns batch x outputDim() floats. */
  public synchronized float[] run(int[] inputIds, int[] attentionMask, int batch, Subnet subnet) {
    Subnet s = nonNull(subnet);
    return nativeRun(live(), inputIds, attentionMask, batch, s.layers, s.heads, s.mlp, threads);
  }

  /** Median latency in ms of each candidate on one sequence of {@code seq} tokens, after 3 warm-up runs. */
  public synchronized double[] profile(Subnet[] candidates, int seq, int runs) {
    int[][][] c = split(candidates);
    return nativeProfile(live(), c[0], c[1], c[2], seq, threads, runs);
  }

  /**
   * The index of the best-scoring candidate whose latency fits {@code budgetMs} (equal scores: the
   * faster, then the first), or -1 when none fits. The same rule as Python's {@code Engine.pick}.
   */
  public static int pickUnderBudget(double[] scores, double[] latencyMs, double budgetMs) {
    return nativePickUnderBudget(scores, latencyMs, budgetMs);
  }

  /** Profile every candidate here and pick the largest (most layer parameters) within the budget. */
  public synchronized Pick pickLargestUnderBudget(Subnet[] candidates, double budgetMs, int seq, int runs) {
    int[][][] c = split(candidates);
    double[] latency = new double[candidates.length];
    int index = nativePickLargest(live(), c[0], c[1], c[2], budgetMs, seq, threads, runs, latency);
    return new Pick(index >= 0 ? candidates[index] : null, index, latency);
  }

  /**
   * Continue {@code promptIds} with {@code subnet} of a decoder file: the new token ids (stop id
   * included when one ended it). Everything is validated before any compute: ids outside the
   * vocabulary, a prompt that leaves no position free, maxNewTokens &lt; 1 or past the positions,
   * heads that are not whole key/value groups raise IllegalArgumentException. {@code listener}
   * (may be null) gets each token as soon as it is sampled, on this thread.
   */
  public synchronized Generated generate(int[] promptIds, Subnet subnet, GenerateOptions options,
      TokenListener listener) {
    Subnet s = nonNull(subnet);
    if (options == null) throw new IllegalArgumentException("options must not be null");
    double[] stats = new double[6];
    Subnet d = options.draft;
    int[] ids = nativeGenerate(live(), promptIds, s.layers, s.heads, s.mlp, options.maxNewTokens,
        options.temperature, options.topK, options.topP, options.repetitionPenalty, options.seed,
        options.stopIds, options.fp16Cache, threads, listener, stats, d == null ? null : d.layers,
        d == null ? null : d.heads, d == null ? null : d.mlp, options.draftK, options.draftVocab);
    return new Generated(ids, stats);
  }

  /** The new token ids only (see {@link #generate(int[], Subnet, GenerateOptions, TokenListener)}). */
  public int[] generate(int[] promptIds, Subnet subnet, int maxNewTokens, float temperature, int topK, float topP,
      long seed, int[] stopIds) {
    GenerateOptions o = new GenerateOptions().maxNewTokens(maxNewTokens).temperature(temperature).topK(topK)
        .topP(topP).seed(seed).stopIds(stopIds);
    return generate(promptIds, subnet, o, null).ids;
  }

  // --- helpers -----------------------------------------------------------------------------------

  private static Subnet nonNull(Subnet subnet) {
    if (subnet == null) throw new IllegalArgumentException("subnet must not be null");
    return subnet;
  }

  private static int[][][] split(Subnet[] candidates) {
    if (candidates == null || candidates.length == 0) {
      throw new IllegalArgumentException("give at least one candidate sub-network");
    }
    int[][][] out = new int[3][candidates.length][];
    for (int i = 0; i < candidates.length; i++) {
      Subnet s = nonNull(candidates[i]);
      out[0][i] = s.layers;
      out[1][i] = s.heads;
      out[2][i] = s.mlp;
    }
    return out;
  }

  // (layer, heads, mlp) triples, flattened.
  private static Subnet fromFlat(int[] flat) {
    int n = flat.length / 3;
    int[] layers = new int[n];
    int[] heads = new int[n];
    int[] mlp = new int[n];
    for (int i = 0; i < n; i++) {
      layers[i] = flat[3 * i];
      heads[i] = flat[3 * i + 1];
      mlp[i] = flat[3 * i + 2];
    }
    return new Subnet(layers, heads, mlp);
  }

  // --- native (app/src/main/cpp/mlfs_jni.cpp) ----------------------------------------------------

  private static native long nativeOpen(String path, boolean verifyChecksum) throws IOException;

  private static native void nativeClose(long handle);

  private static native int[] nativeDims(long handle);

  private static native String nativeDtype(long handle);

  private static native long nativeFileSize(long handle);

  private static native byte[] nativeMetadata(long handle);

  private static native int[] nativeUniformLayers(long handle, int depth, int heads, int mlp);

  private static native int[][] nativeDefaultCandidates(long handle);

  private static native long nativeLayerParams(long handle, int[] layers, int[] heads, int[] mlp);

  private static native float[] nativeRun(long handle, int[] inputIds, int[] attentionMask, int batch,
      int[] layers, int[] heads, int[] mlp, int threads);

  private static native double[] nativeProfile(long handle, int[][] layers, int[][] heads, int[][] mlp,
      int seq, int threads, int runs);

  private static native int nativePickUnderBudget(double[] scores, double[] latencyMs, double budgetMs);

  private static native int nativePickLargest(long handle, int[][] layers, int[][] heads, int[][] mlp,
      double budgetMs, int seq, int threads, int runs, double[] latencyOut);

  private static native int[] nativeGenerate(long handle, int[] promptIds, int[] layers, int[] heads, int[] mlp,
      int maxNewTokens, float temperature, int topK, float topP, float repetitionPenalty, long seed, int[] stopIds,
      boolean fp16Cache, int threads, TokenListener listener, double[] statsOut, int[] draftLayers,
      int[] draftHeads, int[] draftMlp, int draftK, int draftVocab);
}
