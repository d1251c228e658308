package org.mlfsedge.demo;

/** Logits to a label and its probability; plain Java (shared by both model panels). */
public final class Scores {
  public final int best;
  public final float probability;

  private Scores(int best, float probability) {
    this.best = best;
    this.probability = probability;
  }

  /** Softmax over {@code logits[offset, offset + n)}, its arg-max and that class's probability. */
  public static Scores softmax(float[] logits, int offset, int n) {
    if (n < 1 || offset < 0 || offset + n > logits.length) {
      throw new IllegalArgumentException("bad logits range " + offset + "+" + n + " of " + logits.length);
    }
    int best = offset;
    for (int i = offset; i < offset + n; i++) if (logits[i] > logits[best]) best = i;
    double sum = 0;
    for (int i = offset; i < offset + n; i++) sum += Math.exp(logits[i] - logits[best]);
    return new Scores(best - offset, (float) (1.0 / sum));
  }

  /** Euclidean norm of an embedding (what the app shows for an encoder without a classifier head). */
  public static double norm(float[] v) {
    double s = 0;
    for (float x : v) s += (double) x * x;
    return Math.sqrt(s);
  }
}
