package org.pytorch.executorch;

import java.io.Closeable;

/** Module.kt: {@code open class Module private constructor(...) : Closeable}. */
public class Module implements Closeable {
  public static final int LOAD_MODE_FILE = 0;
  public static final int LOAD_MODE_MMAP = 1;

  private Module() {
    throw new RuntimeException("Stub!");
  }

  /** {@code @JvmStatic @JvmOverloads fun load(modelPath: String?, loadMode: Int = LOAD_MODE_FILE, numThreads: Int = 0)}. */
  public static Module load(String modelPath) {
    throw new RuntimeException("Stub!");
  }

  public static Module load(String modelPath, int loadMode) {
    throw new RuntimeException("Stub!");
  }

  public static Module load(String modelPath, int loadMode, int numThreads) {
    throw new RuntimeException("Stub!");
  }

  public EValue[] forward(EValue... inputs) {
    throw new RuntimeException("Stub!");
  }

  public EValue[] execute(String methodName, EValue... inputs) {
    throw new RuntimeException("Stub!");
  }

  public void destroy() {
    throw new RuntimeException("Stub!");
  }

  @Override
  public void close() {
    throw new RuntimeException("Stub!");
  }
}
