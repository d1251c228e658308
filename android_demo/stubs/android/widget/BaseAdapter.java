package android.widget;

public abstract class BaseAdapter implements SpinnerAdapter {
  public BaseAdapter() {
    throw new RuntimeException("Stub!");
  }
}
