package org.pytorch.executorch;

/** EValue.kt: a final Kotlin class with a private constructor and @JvmStatic factories. */
public final class EValue {
  private EValue() {
    throw new RuntimeException("Stub!");
  }

  public static EValue from(Tensor tensor) {
    throw new RuntimeException("Stub!");
  }

  public Tensor toTensor() {
    throw new RuntimeException("Stub!");
  }
}
