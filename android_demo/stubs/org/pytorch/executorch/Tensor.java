package org.pytorch.executorch;

/** Tensor.kt: {@code abstract class Tensor internal constructor(shape: LongArray)}. */
public abstract class Tensor {
  Tensor(long[] shape) {
    throw new RuntimeException("Stub!");
  }

  public static Tensor fromBlob(long[] data, long[] shape) {
    throw new RuntimeException("Stub!");
  }

  public static Tensor fromBlob(int[] data, long[] shape) {
    throw new RuntimeException("Stub!");
  }

  public static Tensor fromBlob(float[] data, long[] shape) {
    throw new RuntimeException("Stub!");
  }

  public long[] shape() {
    throw new RuntimeException("Stub!");
  }

  public long numel() {
    throw new RuntimeException("Stub!");
  }

  /** The Kotlin property {@code open val dataAsFloatArray: FloatArray}. */
  public float[] getDataAsFloatArray() {
    throw new RuntimeException("Stub!");
  }
}
